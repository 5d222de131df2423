package main

import (
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// dropProxy forwards loopback TCP to a server and counts the bytes the
// server sends; the first connection to carry more than dropAfter bytes
// towards the client is cut there, once.
type dropProxy struct {
	ln        net.Listener
	target    string
	dropAfter int64
	toClient  atomic.Int64
	dropped   atomic.Bool
	wg        sync.WaitGroup
}

func startDropProxy(t *testing.T, target string, dropAfter int64) *dropProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dropProxy{ln: ln, target: target, dropAfter: dropAfter}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *dropProxy) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(s, c); s.Close() }()
	var sent int64
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if sent+int64(n) > p.dropAfter && p.dropped.CompareAndSwap(false, true) {
				keep := p.dropAfter - sent
				w, _ := c.Write(buf[:keep])
				p.toClient.Add(int64(w))
				return // cut mid-blob
			}
			w, werr := c.Write(buf[:n])
			p.toClient.Add(int64(w))
			sent += int64(w)
			if werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func noiseText(seed uint64, n int) string {
	r := rand.New(rand.NewPCG(seed, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

// TestTransferResumeAndDelta: an agent behind a proxy that drops its
// connection mid-blob still installs, moving hardly more than the blob;
// the upgrade to a build where a few bytes of the big file changed moves
// a delta, not the file.
func TestTransferResumeAndDelta(t *testing.T) {
	f := newFleet(t)
	const size = 24 << 20
	big := noiseText(1, size)
	src := filepath.Join(f.dir, "src")
	for _, v := range []struct{ version, big string }{
		{"1.0.0", big},
		{"2.0.0", big[:size/2] + "a patched function" + big[size/2:]},
	} {
		dir := writeSource(t, filepath.Join(src, v.version), pkgSource{
			yaml:  "group: com.example\nname: big\nversion: " + v.version + "\n",
			files: map[string]string{"files/lib/big.bin": v.big, "files/share/README": "big " + v.version + "\n"},
		})
		out := filepath.Join(f.dir, "big-"+v.version+".drover")
		f.mustOK(nil, "pkg", "build", dir, "-o", out)
		f.op("pkg", "push", out)
	}
	proxy := startDropProxy(t, strings.TrimPrefix(f.addr, "https://"), size/2)
	a := f.newAgent("edge1")
	for i, arg := range a.args {
		if arg == f.addr {
			a.args[i] = "https://" + proxy.ln.Addr().String()
		}
	}
	a.start()
	f.waitFor("edge1", "reported", func(d deviceJSON) bool { return len(d.SystemTags) > 0 })

	f.op("state", "set", "-f", writeState(t, f, "edge1", "id: edge1\napps:\n  - name: com.example:big\n    version: 1.0.0\n"))
	f.waitConverged("edge1", "com.example:big=1.0.0")
	if got := readFile(t, filepath.Join(a.software, "com", "example", "big", "current", "lib", "big.bin")); got != big {
		t.Fatalf("installed big.bin differs (%d bytes)", len(got))
	}
	if !proxy.dropped.Load() {
		t.Fatal("the proxy never cut the download")
	}
	first := proxy.toClient.Load()
	if first > size+size/20 {
		t.Errorf("first install moved %d bytes for a %d-byte blob cut once: more than 5%% over; agent log:\n%s", first, size, tail(a.logs.String(), 3000))
	}

	f.op("state", "set", "-f", writeState(t, f, "edge1", "id: edge1\napps:\n  - name: com.example:big\n    version: 2.0.0\n"))
	f.waitConverged("edge1", "com.example:big=2.0.0")
	if got := readFile(t, filepath.Join(a.software, "com", "example", "big", "current", "lib", "big.bin")); !strings.Contains(got, "a patched function") || len(got) != size+18 {
		t.Fatalf("upgrade did not install version 2 of big.bin")
	}
	up := proxy.toClient.Load() - first
	t.Logf("first install moved %d bytes (blob %d, cut once), upgrade %d", first, size, up)
	if up > size/20 {
		t.Errorf("upgrade of an 18-byte change moved %d bytes", up)
	}
}
