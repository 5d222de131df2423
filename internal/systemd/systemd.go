// Package systemd installs the drover agent as a systemd service, the way
// Jetpack's installer does (DESIGN §5): the agent home's folders, the
// operator's agent settings in <home>/config/agent.yaml, a unit that runs
// `drover agent --home DIR` and restarts it, an environment file and a profile script setting DROVER_HOME, and a system
// user when asked. Uninstall reverses it. It never changes firewall rules.
//
// Everything is first a Plan (a list of Actions) that can be printed
// (--dry-run) or applied; files are written under a destination prefix so
// an image can be prepared, and a test can check the written files.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/drover-dev/drover/internal/atomicfile"
)

// Config describes one agent installation.
type Config struct {
	// Name of the unit, without .service; default drover-agent.
	Name string
	// Home is the agent home (absolute).
	Home string
	// Binary is the absolute path of the drover executable.
	Binary string
	// Args are more flags of `drover agent` after the subcommand, e.g.
	// ["--log-level", "debug"]; --home is added from Home. Settings an
	// operator may edit belong in AgentYAML instead.
	Args []string
	// AgentYAML is written to <home>/config/agent.yaml (mode 0640, owned
	// by User), the defaults of the agent's flags; empty = no file.
	AgentYAML string
	// User and Group run the agent; empty = root. CreateUser makes User a
	// system user (useradd) when it does not exist.
	User, Group string
	CreateUser  bool
	// DestDir prefixes every path written (like make's DESTDIR); empty =
	// the real root. With a DestDir, systemctl and useradd are not run:
	// the files are for an image.
	DestDir string
	// NoStart writes the files without enabling and starting the unit.
	NoStart bool
}

// Action kinds.
const (
	KindUser   = "user"   // create a system user (useradd) unless it exists
	KindDir    = "mkdir"  // make a folder
	KindWrite  = "write"  // write a file
	KindRemove = "remove" // remove a file or (RemoveAll) a tree
	KindRun    = "run"    // run a command
)

// Action is one step of an install or uninstall.
type Action struct {
	Kind    string
	Path    string // for mkdir, write, remove
	Mode    os.FileMode
	Owner   string // user:group to chown to; empty = leave
	Content string // for write
	Argv    []string
	// Tree removes a folder with everything in it (uninstall --purge).
	Tree bool
	// IgnoreError is for steps that may fail harmlessly (stopping a unit
	// that is not running).
	IgnoreError bool
}

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.@-]*$`)

func (c *Config) defaults() error {
	if c.Name == "" {
		c.Name = "drover-agent"
	}
	if !nameRe.MatchString(c.Name) {
		return fmt.Errorf("unit name %q: want letters, digits, '.', '_', '@' and '-'", c.Name)
	}
	if c.Home == "" || !filepath.IsAbs(c.Home) {
		return fmt.Errorf("agent home %q: want an absolute path", c.Home)
	}
	if c.Binary == "" || !filepath.IsAbs(c.Binary) {
		return fmt.Errorf("drover binary %q: want an absolute path", c.Binary)
	}
	if c.User != "" && !userRe.MatchString(c.User) {
		return fmt.Errorf("user %q: want a system user name (lowercase letters, digits, '_' and '-')", c.User)
	}
	if c.Group == "" {
		c.Group = c.User
	}
	if c.Group != "" && !userRe.MatchString(c.Group) {
		return fmt.Errorf("group %q: want a group name (lowercase letters, digits, '_' and '-')", c.Group)
	}
	if c.CreateUser && c.User == "" {
		return errors.New("creating a user needs its name (--user)")
	}
	return nil
}

var userRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// Paths of the installed files.
func (c *Config) unitPath() string    { return "/etc/systemd/system/" + c.Name + ".service" }
func (c *Config) envPath() string     { return "/etc/default/" + c.Name }
func (c *Config) profilePath() string { return "/etc/profile.d/" + c.Name + ".sh" }

// homeDirs are the folders of the agent home (DESIGN §5).
var homeDirs = []struct {
	rel  string
	mode os.FileMode
}{
	{"", 0o755}, {"bin", 0o755}, {"config", 0o755}, {"config/healthcheck.d", 0o755}, {"config/hooks", 0o755},
	{"logs", 0o750}, {"system", 0o750},
}

// InstallPlan returns the steps of an install.
func InstallPlan(cfg Config) ([]Action, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	var acts []Action
	if cfg.CreateUser {
		acts = append(acts, Action{Kind: KindUser, Argv: []string{"useradd", "--system", "--user-group",
			"--home-dir", cfg.Home, "--no-create-home", "--shell", "/usr/sbin/nologin", cfg.User}})
	}
	owner := ""
	if cfg.User != "" {
		owner = cfg.User + ":" + cfg.Group
	}
	for _, d := range homeDirs {
		acts = append(acts, Action{Kind: KindDir, Path: path.Join(cfg.Home, d.rel), Mode: d.mode, Owner: owner})
	}
	if cfg.AgentYAML != "" {
		acts = append(acts, Action{Kind: KindWrite, Path: path.Join(cfg.Home, "config", "agent.yaml"), Mode: 0o640, Owner: owner, Content: cfg.AgentYAML})
	}
	acts = append(acts,
		Action{Kind: KindWrite, Path: cfg.envPath(), Mode: 0o644, Content: EnvFile(cfg)},
		Action{Kind: KindWrite, Path: cfg.profilePath(), Mode: 0o644, Content: ProfileScript(cfg)},
		Action{Kind: KindWrite, Path: cfg.unitPath(), Mode: 0o644, Content: Unit(cfg)},
	)
	if cfg.DestDir == "" {
		acts = append(acts, Action{Kind: KindRun, Argv: []string{"systemctl", "daemon-reload"}})
		if !cfg.NoStart {
			acts = append(acts, Action{Kind: KindRun, Argv: []string{"systemctl", "enable", "--now", cfg.Name + ".service"}})
		}
	}
	return acts, nil
}

// UninstallPlan returns the steps that reverse an install: the unit is
// stopped and removed with its environment and profile files. The home
// (installed software, the state) stays unless purge; the user stays
// unless removeUser.
func UninstallPlan(cfg Config, purge, removeUser bool) ([]Action, error) {
	if cfg.Binary == "" {
		cfg.Binary = "/usr/local/bin/drover" // not used by an uninstall
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if removeUser && cfg.User == "" {
		return nil, errors.New("removing a user needs its name (--user)")
	}
	var acts []Action
	if cfg.DestDir == "" {
		acts = append(acts, Action{Kind: KindRun, Argv: []string{"systemctl", "disable", "--now", cfg.Name + ".service"}, IgnoreError: true})
	}
	for _, p := range []string{cfg.unitPath(), cfg.envPath(), cfg.profilePath()} {
		acts = append(acts, Action{Kind: KindRemove, Path: p})
	}
	if cfg.DestDir == "" {
		acts = append(acts, Action{Kind: KindRun, Argv: []string{"systemctl", "daemon-reload"}})
	}
	if purge {
		acts = append(acts, Action{Kind: KindRemove, Path: cfg.Home, Tree: true})
	}
	if removeUser && cfg.DestDir == "" {
		acts = append(acts, Action{Kind: KindRun, Argv: []string{"userdel", cfg.User}})
	}
	return acts, nil
}

// Unit returns the systemd unit text.
func Unit(cfg Config) string {
	argv := append([]string{cfg.Binary, "agent", "--home", cfg.Home}, cfg.Args...)
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quote(a)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by 'drover agent install'; 'drover agent uninstall' removes it.\n")
	fmt.Fprintf(&b, "[Unit]\nDescription=drover agent: keeps this machine in its declared state\n")
	fmt.Fprintf(&b, "Wants=network-online.target\nAfter=network-online.target\n\n")
	fmt.Fprintf(&b, "[Service]\nType=simple\nEnvironmentFile=%s\n", cfg.envPath())
	fmt.Fprintf(&b, "ExecStart=%s\n", strings.Join(q, " "))
	fmt.Fprintf(&b, "Restart=always\nRestartSec=5s\n")
	if cfg.User != "" {
		fmt.Fprintf(&b, "User=%s\nGroup=%s\n", cfg.User, cfg.Group)
	}
	// The agent finishes or rolls back an install step on SIGTERM; the
	// journal covers a kill. Services it started are not the unit's to
	// kill when the agent itself restarts.
	fmt.Fprintf(&b, "KillMode=process\nTimeoutStopSec=90s\n\n")
	fmt.Fprintf(&b, "[Install]\nWantedBy=multi-user.target\n")
	return b.String()
}

// EnvFile returns the environment file the unit reads.
func EnvFile(cfg Config) string {
	return "# Written by 'drover agent install'.\nDROVER_HOME=" + cfg.Home + "\n"
}

// ProfileScript returns the login-shell profile that lets node-local
// verbs (drover config, drover log ...) find the agent.
func ProfileScript(cfg Config) string {
	return "# Written by 'drover agent install'.\nexport DROVER_HOME=" + shellQuote(cfg.Home) + "\n"
}

// quote quotes one word of a systemd command line.
func quote(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if s != "" && !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func shellQuote(s string) string {
	if regexp.MustCompile(`^[a-zA-Z0-9/._-]+$`).MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Describe prints the plan, for --dry-run.
func Describe(w io.Writer, destDir string, acts []Action) error {
	for _, a := range acts {
		var err error
		switch a.Kind {
		case KindUser:
			_, err = fmt.Fprintf(w, "create system user %s unless it exists: %s\n", a.Argv[len(a.Argv)-1], strings.Join(a.Argv, " "))
		case KindDir:
			_, err = fmt.Fprintf(w, "mkdir %s (mode %04o%s)\n", filepath.Join(destDir, a.Path), a.Mode, ownerNote(a))
		case KindWrite:
			_, err = fmt.Fprintf(w, "write %s (mode %04o%s):\n", filepath.Join(destDir, a.Path), a.Mode, ownerNote(a))
			for _, line := range strings.Split(strings.TrimSuffix(a.Content, "\n"), "\n") {
				if err == nil {
					_, err = fmt.Fprintln(w, strings.TrimRight("  | "+line, " "))
				}
			}
		case KindRemove:
			what := "remove"
			if a.Tree {
				what = "remove with everything in it"
			}
			_, err = fmt.Fprintf(w, "%s %s\n", what, filepath.Join(destDir, a.Path))
		case KindRun:
			_, err = fmt.Fprintf(w, "run %s\n", strings.Join(a.Argv, " "))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func ownerNote(a Action) string {
	if a.Owner == "" {
		return ""
	}
	return ", owner " + a.Owner
}

// Runner runs a command; tests replace it.
type Runner func(ctx context.Context, argv []string) error

// ExecRunner runs commands for real, with their output in the error.
func ExecRunner(ctx context.Context, argv []string) error {
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Apply carries out the plan under destDir, running commands with run.
// It stops at the first failing step.
func Apply(ctx context.Context, destDir string, acts []Action, run Runner) error {
	for _, a := range acts {
		p := filepath.Join(destDir, a.Path)
		switch a.Kind {
		case KindUser:
			name := a.Argv[len(a.Argv)-1]
			if _, err := user.Lookup(name); err == nil {
				continue
			}
			if destDir != "" {
				continue // an image gets its users elsewhere
			}
			if err := run(ctx, a.Argv); err != nil {
				return fmt.Errorf("create user %s: %w", name, err)
			}
		case KindDir:
			if err := os.MkdirAll(p, a.Mode); err != nil {
				return err
			}
			if err := os.Chmod(p, a.Mode); err != nil {
				return err
			}
			if a.Owner != "" {
				if err := chown(p, a.Owner); err != nil {
					return err
				}
			}
		case KindWrite:
			if err := writeFile(p, []byte(a.Content), a.Mode); err != nil {
				return err
			}
			if a.Owner != "" {
				if err := chown(p, a.Owner); err != nil {
					return err
				}
			}
		case KindRemove:
			var err error
			if a.Tree {
				err = os.RemoveAll(p)
			} else if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
				err = nil
			}
			if err != nil {
				return err
			}
		case KindRun:
			if err := run(ctx, a.Argv); err != nil && !a.IgnoreError {
				return err
			}
		}
	}
	return nil
}

func chown(p, owner string) error {
	un, gn, _ := strings.Cut(owner, ":")
	u, err := user.Lookup(un)
	if err != nil {
		return fmt.Errorf("owner of %s: %w", p, err)
	}
	g, err := user.LookupGroup(gn)
	if err != nil {
		return fmt.Errorf("group of %s: %w", p, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	return os.Lchown(p, uid, gid)
}

// writeFile writes atomically (atomicfile), creating the folder.
func writeFile(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, data, mode)
}
