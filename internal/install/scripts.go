package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/drover-dev/drover/internal/atomicfile"
	"github.com/drover-dev/drover/internal/privdir"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
	"github.com/drover-dev/drover/internal/proc"
)

// ScriptError is a package script that exited non-zero (or was killed).
type ScriptError struct {
	Script string // preinst, postinst, prerm, postrm, configure
	Code   int    // exit code; -1 when killed by a signal or the timeout
	Output string // tail of stdout+stderr, at most 4 KiB
	Log    string // the whole output: a file under Config.LogDir
}

// Error reads "postinst exited 3: <last line of output>".
func (e *ScriptError) Error() string {
	return fmt.Sprintf("%s exited %d: %s", e.Script, e.Code, lastLine(e.Output))
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n\t ")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return strings.TrimSpace(s)
}

const tailSize = 4 << 10

// scriptRun is one script to run with its environment.
type scriptRun struct {
	app    *appState     // the build the script belongs to
	m      *api.Manifest // its manifest
	script string        // name
	cwd    string
	// Step-wide: the version installed by the step (the removed one on
	// removal), the version it replaces, the action, the parameters.
	version    string
	oldVersion string
	action     string
	params     map[string]string
}

// scriptsDir is where a build's scripts are kept while it is installed
// or previous, so prerm/postrm of an old build run without its blobs.
func (e *Engine) scriptsDir(digest string) string {
	return filepath.Join(e.cfg.StateDir, "scripts", digest)
}

func (e *Engine) manifestPath(digest string) string {
	return filepath.Join(e.cfg.StateDir, "manifests", digest+".json")
}

// saveBuild keeps the manifest and scripts of a build under StateDir.
// Files already there are kept: they were written atomically, so they
// are whole, and a rollback to a kept build needs no blob.
func (e *Engine) saveBuild(ctx context.Context, digest string, m *api.Manifest) error {
	mp := e.manifestPath(digest)
	if ok, err := exists(mp); err != nil {
		return err
	} else if !ok {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(mp, b, 0o600); err != nil {
			return err
		}
	}
	if len(m.Scripts) == 0 {
		return nil
	}
	dir := e.scriptsDir(digest)
	if err := privdir.Make(dir); err != nil {
		return err
	}
	wrote := false
	for _, name := range api.ScriptNames {
		d := m.Scripts[name]
		if d == "" {
			continue
		}
		dst := filepath.Join(dir, name)
		if ok, err := exists(dst); err != nil {
			return err
		} else if ok {
			continue
		}
		tmp := filepath.Join(dir, "."+name+".tmp-"+randSuffix())
		if err := e.writeScript(ctx, d, tmp); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("script %s: %w", name, err)
		}
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
		wrote = true
	}
	if wrote {
		return atomicfile.SyncDir(dir)
	}
	return nil
}

// writeScript copies a script blob (whose size the manifest does not
// record) to dst, mode 0755, fsynced.
func (e *Engine) writeScript(ctx context.Context, digest, dst string) error {
	src, err := e.cfg.Blobs.Open(ctx, digest)
	if err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o700)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(out, h), src)
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && got != digest {
		err = &CorruptBlobError{Digest: digest, Path: "script " + filepath.Base(dst), Got: got}
	}
	if err == nil {
		err = out.Chmod(0o755)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadManifest reads a kept manifest.
func (e *Engine) loadManifest(digest string) (*api.Manifest, error) {
	if !api.ValidDigest(digest) {
		return nil, fmt.Errorf("manifest %q: %w", digest, ErrNotInstalled)
	}
	b, err := os.ReadFile(e.manifestPath(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("manifest %s: %w", digest, ErrNotInstalled)
	}
	if err != nil {
		return nil, err
	}
	var m api.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return &m, nil
}

// gcBuilds removes kept manifests and scripts of builds that are neither
// installed nor previous (nor in the journal), and temp files left by a
// crash.
func (e *Engine) gcBuilds() error {
	keep := map[string]bool{}
	for _, a := range e.state.Apps {
		keep[a.Digest] = true
		if a.Previous != nil {
			keep[a.Previous.Digest] = true
		}
	}
	var errs []error
	j, jerr := e.readJournal()
	if jerr == nil {
		keep[j.OldDigest] = true
		keep[j.NewDigest] = true
		errs = append(errs, e.gcRendered(j))
	} else if errors.Is(jerr, os.ErrNotExist) {
		errs = append(errs, e.gcRendered(nil))
	}
	mdir := filepath.Join(e.cfg.StateDir, "manifests")
	ents, _ := os.ReadDir(mdir)
	for _, de := range ents {
		n := de.Name()
		d, ok := strings.CutSuffix(n, ".json")
		if ok && keep[d] {
			continue
		}
		errs = append(errs, removeIfExists(filepath.Join(mdir, n)))
	}
	sdir := filepath.Join(e.cfg.StateDir, "scripts")
	ents, _ = os.ReadDir(sdir)
	for _, de := range ents {
		n := de.Name()
		if keep[n] {
			// Leftover temp files of an interrupted copy.
			sub, _ := os.ReadDir(filepath.Join(sdir, n))
			for _, s := range sub {
				if strings.HasPrefix(s.Name(), ".") {
					errs = append(errs, removeIfExists(filepath.Join(sdir, n, s.Name())))
				}
			}
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(sdir, n)))
	}
	return errors.Join(errs...)
}

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// scriptEnv is the whole environment of a script: PATH from the agent's
// environment and the DROVER_ variables, nothing else.
func (e *Engine) scriptEnv(r scriptRun) []string {
	p := os.Getenv("PATH")
	if p == "" {
		p = defaultPath
	}
	env := []string{
		"PATH=" + p,
		"DROVER_PACKAGE=" + r.m.Coordinate().String(),
		"DROVER_VERSION=" + r.version,
		"DROVER_PREFIX=" + r.app.Prefix,
		"DROVER_ROOT=" + e.cfg.Root,
		"DROVER_DEVICE=" + e.cfg.Device,
		"DROVER_INSTANCE=" + r.app.Instance,
		"DROVER_ACTION=" + r.action,
	}
	if r.oldVersion != "" {
		env = append(env, "DROVER_OLD_VERSION="+r.oldVersion)
	}
	names := make([]string, 0, len(r.params))
	for k := range r.params {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		env = append(env, param.EnvName(k)+"="+r.params[k])
	}
	return env
}

// runScript runs one script of a build if the build has it. Its output
// goes to a log file of its own; a non-zero exit is a *ScriptError.
func (e *Engine) runScript(ctx context.Context, r scriptRun) error {
	if r.m.Scripts[r.script] == "" {
		return nil
	}
	bin := filepath.Join(e.scriptsDir(r.app.Digest), r.script)
	if err := os.MkdirAll(e.cfg.LogDir, 0o755); err != nil {
		return err
	}
	slug := strings.NewReplacer(":", "_", "/", "_").Replace(r.app.label())
	logPath := filepath.Join(e.cfg.LogDir, fmt.Sprintf("%s-%s-%s.log", e.cfg.Now().UTC().Format("20060102T150405.000000000Z"), slug, r.script))
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer lf.Close()
	log := e.log.With("package", r.m.Coordinate().String(), "script", r.script)
	log.Info("running script", "cwd", r.cwd, "log", logPath)

	// The log file itself, not a pipe: Wait must not hang on a daemon
	// the script leaves running with our stdout.
	res, runErr := proc.Run(ctx, proc.Cmd{
		Path: bin, Dir: r.cwd, Env: e.scriptEnv(r),
		Stdout: lf, Stderr: lf,
		Timeout: e.cfg.ScriptTimeout,
	})
	if runErr == nil {
		return nil
	}
	code := res.Code
	var ee *exec.ExitError
	if !errors.As(runErr, &ee) {
		code = -1
		fmt.Fprintf(lf, "drover: %v\n", runErr)
	}
	if res.TimedOut {
		fmt.Fprintf(lf, "drover: killed after the script timeout of %v\n", e.cfg.ScriptTimeout)
		code = -1
	} else if ctx.Err() != nil {
		fmt.Fprintf(lf, "drover: killed: %v\n", ctx.Err())
		code = -1
	}
	se := &ScriptError{Script: r.script, Code: code, Output: proc.Tail(logPath, tailSize), Log: logPath}
	log.Warn("script failed", "code", code, "err", se.Error())
	return se
}
