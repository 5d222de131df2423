package transfer

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// code returns n bytes of fake x86-64 code: calls of one function and
// loads of one variable from many places, with filler between.
func code(n int) []byte {
	const fn, variable = 0x40_0000, 0x60_0000
	b := []byte("\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00")
	for len(b)+16 <= n {
		b = binary.LittleEndian.AppendUint32(append(b, 0xE8), uint32(fn-(len(b)+5)))
		b = binary.LittleEndian.AppendUint32(append(b, 0x48, 0x8B, 0x05), uint32(variable-(len(b)+7)))
		b = append(b, 0x90, 0x90, 0x90)
	}
	return b
}

func TestFilterX86RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"shorter than an instruction", []byte{0xE8, 1, 2, 3}},
		{"call at the very end", []byte{0x90, 0xE8, 1, 0, 0, 0}},
		{"noise", noisy(7, 100_000)},
		{"code", code(50_000)},
		{"all call opcodes", bytes.Repeat([]byte{0xE8}, 1000)},
		{"all RIP-relative loads", bytes.Repeat([]byte{0x8B, 0x05}, 1000)},
		{"far displacements", bytes.Repeat([]byte{0xE9, 0x12, 0x34, 0x56, 0x78}, 500)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(tt.data)
			FilterX86(b)
			if len(b) != len(tt.data) {
				t.Fatalf("filter changed the length from %d to %d", len(tt.data), len(b))
			}
			UnfilterX86(b)
			if !bytes.Equal(b, tt.data) {
				t.Error("unfilter did not give back the input")
			}
		})
	}
}

// TestFilterX86MakesCallsRepeat: after the filter the calls of one
// function carry the same four bytes, and the stream compresses better.
func TestFilterX86MakesCallsRepeat(t *testing.T) {
	data := code(200_000)
	b := bytes.Clone(data)
	FilterX86(b)
	targets := map[uint32]bool{}
	for i := 20; i+16 <= len(b); i += 15 {
		if b[i] != 0xE8 {
			t.Fatalf("byte %d is %#x, want a call", i, b[i])
		}
		targets[binary.LittleEndian.Uint32(b[i+1:])] = true
	}
	if len(targets) != 1 {
		t.Errorf("calls of one function carry %d different addresses after the filter, want 1", len(targets))
	}
	if plain, filtered := packed(t, data), packed(t, b); filtered > plain*3/4 {
		t.Errorf("filtered code packs to %d bytes, unfiltered %d: want clearly smaller", filtered, plain)
	}
	// Far displacements (not within ±16 MiB) are left as they are.
	far := []byte{0xE8, 0x12, 0x34, 0x56, 0x78, 0x90}
	if FilterX86(far); !bytes.Equal(far, []byte{0xE8, 0x12, 0x34, 0x56, 0x78, 0x90}) {
		t.Errorf("far call rewritten: % x", far)
	}
}

func packed(t *testing.T, data []byte) int {
	return len(writePack(t, []entry{{kind: KindBlob, digest: digest(data), data: data}}))
}

func TestIsX86ELF(t *testing.T) {
	elf := code(64)
	arm := bytes.Clone(elf)
	arm[18] = 183 // EM_AARCH64
	tests := []struct {
		name string
		head []byte
		want bool
	}{
		{"x86-64", elf, true},
		{"aarch64", arm, false},
		{"32-bit", append([]byte("\x7fELF\x01"), elf[5:]...), false},
		{"too short", elf[:10], false},
		{"text", []byte("#!/bin/sh\necho hello there\n"), false},
	}
	for _, tt := range tests {
		if got := IsX86ELF(tt.head); got != tt.want {
			t.Errorf("%s: IsX86ELF = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// UnfilterX86 undoes FilterX86 for any bytes, not only real programs: a
// hostile or damaged pack can only fail its digest check.
func FuzzFilterX86(f *testing.F) {
	f.Add([]byte{0xE8, 1, 0, 0, 0, 0x90, 0x90, 0x8D, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b := bytes.Clone(data)
		FilterX86(b)
		UnfilterX86(b)
		if !bytes.Equal(b, data) {
			t.Fatalf("round trip changed %x into %x", data, b)
		}
	})
}
