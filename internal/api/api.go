// Package api holds the types that cross a process boundary: the package
// manifest inside a package file, the desired and resolved state, device
// reports, events, and the one error type of the wire API.
//
// Wire rule (Nomad's): add fields, never change what an existing one means.
// Agents and servers are upgraded at different times.
package api

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

// Coordinate names one package version: group:name:version (copkg).
type Coordinate struct {
	Group   string
	Name    string
	Version string
}

var (
	groupRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]*(\.[a-zA-Z0-9][a-zA-Z0-9_-]*)*$`)
	nameRe  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)
	tagRe   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._+-]*$`)
)

// ValidGroup reports whether g is a valid package group (dotted words).
func ValidGroup(g string) bool { return len(g) <= 128 && groupRe.MatchString(g) }

// ValidName reports whether n is a valid package name.
func ValidName(n string) bool { return len(n) <= 128 && nameRe.MatchString(n) }

// ValidTag reports whether t is a valid tag.
func ValidTag(t string) bool { return len(t) <= 64 && tagRe.MatchString(t) }

// ParseCoordinate parses "group:name:version"; the version must be a
// semantic version.
func ParseCoordinate(s string) (Coordinate, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Coordinate{}, fmt.Errorf("coordinate %q: want group:name:version", s)
	}
	c := Coordinate{Group: parts[0], Name: parts[1], Version: parts[2]}
	if err := c.Validate(); err != nil {
		return Coordinate{}, err
	}
	return c, nil
}

// ParsePackageName parses "group:name".
func ParsePackageName(s string) (group, name string, err error) {
	parts := strings.Split(s, ":")
	if len(parts) != 2 || !ValidGroup(parts[0]) || !ValidName(parts[1]) {
		return "", "", fmt.Errorf("package name %q: want group:name", s)
	}
	return parts[0], parts[1], nil
}

// Validate checks each part of c.
func (c Coordinate) Validate() error {
	if !ValidGroup(c.Group) {
		return fmt.Errorf("group %q: want dotted words of letters, digits, '-' and '_'", c.Group)
	}
	if !ValidName(c.Name) {
		return fmt.Errorf("name %q: want letters, digits, '.', '-' and '_'", c.Name)
	}
	if _, err := semver.StrictNewVersion(c.Version); err != nil {
		return fmt.Errorf("version %q: not a semantic version (like 1.2.0)", c.Version)
	}
	return nil
}

// PackageName is group:name, the coordinate without its version.
func (c Coordinate) PackageName() string { return c.Group + ":" + c.Name }

// String returns group:name:version.
func (c Coordinate) String() string { return c.Group + ":" + c.Name + ":" + c.Version }

// Install modes of a package (DESIGN §3).
const (
	InstallPrefix = "prefix" // versioned folder under the software root, `current` symlink
	InstallRoot   = "root"   // files at their targets under the device's root
)

// File types in a manifest. Nothing else (devices, fifos, sockets,
// hard links) is ever accepted.
const (
	TypeFile    = "file"
	TypeDir     = "dir"
	TypeSymlink = "symlink"
)

// File is one entry of a package's file tree.
type File struct {
	// Path is slash-separated and relative to the install location;
	// it never starts with '/' and never contains "." or ".." elements.
	Path string `json:"path"`
	Type string `json:"type"`
	// Mode holds permission bits only (0o777).
	Mode uint32 `json:"mode"`
	// Size and Digest (hex SHA-256 of the content) are set for files.
	Size   int64  `json:"size,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Target is a symlink's target, relative and inside the install root.
	Target string `json:"target,omitempty"`
	// Overlay holds the tags of the files@TAGS tree the entry comes from;
	// empty for the generic tree.
	Overlay []string `json:"overlay,omitempty"`
}

// Dependency is a package that must be installed first.
type Dependency struct {
	Name    string `json:"name" yaml:"name"`       // group:name
	Version string `json:"version" yaml:"version"` // semver constraint; empty = any
}

// Param declares a package parameter (JPackages' @ASK).
type Param struct {
	Type        string   `json:"type,omitempty" yaml:"type"`
	Default     any      `json:"default,omitempty" yaml:"default"`
	Min         *float64 `json:"min,omitempty" yaml:"min"`
	Max         *float64 `json:"max,omitempty" yaml:"max"`
	Allowed     []any    `json:"allowed,omitempty" yaml:"allowed"`
	Description string   `json:"description,omitempty" yaml:"description"`
	Required    bool     `json:"required,omitempty" yaml:"required"`
	// Secret values never appear on a command line, in events or in
	// logs: services and scripts get them through DROVER_PARAM_<NAME>
	// and a 0600 file, <runtime-dir>/etc/params/<NAME>.
	Secret bool `json:"secret,omitempty" yaml:"secret"`
}

// Template is rendered with the parameters at configure.
type Template struct {
	Src    string `json:"src" yaml:"src"`
	Dest   string `json:"dest" yaml:"dest"`
	Digest string `json:"digest,omitempty" yaml:"-"`
}

// Service is a long-running process a package provides (copkg).
type Service struct {
	Name    string `json:"name" yaml:"name"`
	Start   string `json:"start" yaml:"start"`
	Stop    string `json:"stop,omitempty" yaml:"stop"`
	Health  string `json:"health,omitempty" yaml:"health"`
	Restart string `json:"restart,omitempty" yaml:"restart"`
	// NetChecks are checked from other devices (api/netcheck.go).
	NetChecks []NetCheck `json:"net_checks,omitempty" yaml:"net-checks"`
	// Ports are TCP ports the service listens on: a start counts as
	// successful only once each accepts connections on loopback within
	// Startup (a duration like 30s; default 30s).
	Ports   []int  `json:"ports,omitempty" yaml:"ports"`
	Startup string `json:"startup,omitempty" yaml:"startup"`
	// Console bounds the files of the service's console/ folder.
	Console *ServiceConsole `json:"console,omitempty" yaml:"console"`
}

// ServiceConsole is how a service's console logs rotate: a file that
// reaches MaxSize (like 10MB; default 10MB) is renamed to .1 (older ones
// shift up) and Keep old files are kept (default 5).
type ServiceConsole struct {
	MaxSize string `json:"max_size,omitempty" yaml:"max-size"`
	Keep    *int   `json:"keep,omitempty" yaml:"keep"`
}

// Script names of a package, in no particular order.
var ScriptNames = []string{"preinst", "postinst", "prerm", "postrm", "configure"}

// Manifest describes one build of a package. Its canonical JSON encoding
// (encoding/json of this struct) is stored as manifest.json in the package
// file; the SHA-256 of those bytes is the build's identity.
type Manifest struct {
	Group     string           `json:"group"`
	Name      string           `json:"name"`
	Version   string           `json:"version"`
	Tags      []string         `json:"tags"`
	Install   string           `json:"install"`
	Depends   []Dependency     `json:"depends,omitempty"`
	Params    map[string]Param `json:"params,omitempty"`
	Templates []Template       `json:"templates,omitempty"`
	Services  []Service        `json:"services,omitempty"`
	// Scripts maps a script name (ScriptNames) to its content digest.
	Scripts map[string]string `json:"scripts,omitempty"`
	Files   []File            `json:"files"`
	// Debs are the Debian packages of a root-mode build, sorted by name.
	Debs []Deb `json:"debs,omitempty"`
}

// Coordinate returns the manifest's coordinate.
func (m *Manifest) Coordinate() Coordinate {
	return Coordinate{Group: m.Group, Name: m.Name, Version: m.Version}
}

// Digests returns every blob digest the manifest refers to, once each.
func (m *Manifest) Digests() []string {
	seen := map[string]bool{}
	var out []string
	add := func(d string) {
		if d != "" && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, f := range m.Files {
		add(f.Digest)
	}
	for _, name := range ScriptNames {
		add(m.Scripts[name])
	}
	for _, t := range m.Templates {
		add(t.Digest)
	}
	for _, d := range m.Debs {
		add(d.Digest)
	}
	return out
}

// Build is one pushed build of a package version as the repository lists it.
type Build struct {
	Coordinate string    `json:"coordinate" yaml:"coordinate"`
	Tags       []string  `json:"tags" yaml:"tags"`
	Digest     string    `json:"digest" yaml:"digest"` // SHA-256 of manifest.json
	Install    string    `json:"install" yaml:"install"`
	Files      int       `json:"files" yaml:"files"`
	Size       int64     `json:"size" yaml:"size"`
	Pushed     time.Time `json:"pushed" yaml:"pushed"`
	// AlreadyPushed is set in the answer to a push of a build the server
	// already had: nothing was changed.
	AlreadyPushed bool `json:"already_pushed,omitempty" yaml:"already_pushed,omitempty"`
}

// DesiredApp is one entry of a desired state (jamesd's shape, DESIGN §4).
type DesiredApp struct {
	Name     string         `json:"name" yaml:"name"`
	Version  string         `json:"version,omitempty" yaml:"version,omitempty"`
	Tags     []string       `json:"tags" yaml:"tags"`
	Instance string         `json:"instance,omitempty" yaml:"instance,omitempty"`
	Params   map[string]any `json:"params,omitempty" yaml:"params,omitempty"`
	Purge    bool           `json:"purge,omitempty" yaml:"purge,omitempty"`
}

// DesiredState is what the operator declares for one device.
type DesiredState struct {
	ID         string       `json:"id" yaml:"id"`
	SystemTags []string     `json:"systemtags,omitempty" yaml:"systemtags,omitempty"`
	Apps       []DesiredApp `json:"apps" yaml:"apps"`
}

// ResolvedApp is one build a device must have installed, chosen by the
// server: constraint to exact version, tag match to one build.
type ResolvedApp struct {
	Name     string         `json:"name"` // group:name
	Version  string         `json:"version"`
	Digest   string         `json:"digest"` // manifest digest of the chosen build
	Tags     []string       `json:"tags"`   // extra tags of the desired-state entry
	Instance string         `json:"instance,omitempty"`
	Params   map[string]any `json:"params,omitempty"`
	Purge    bool           `json:"purge,omitempty"`
	// Dependency is true when the app is only there because another needs it.
	Dependency bool `json:"dependency,omitempty"`
	// BuildTags are the tags of the chosen build, which name it in signed
	// targets metadata (drover trust).
	BuildTags []string `json:"build_tags,omitempty"`
}

// Resolved is a device's resolved desired state, dependencies first.
type Resolved struct {
	Device string        `json:"device"`
	Digest string        `json:"digest"` // identity of the answer: changes whenever Apps, Unset or Error do
	Apps   []ResolvedApp `json:"apps"`
	// Unset is true when no desired state was ever declared for the device:
	// the agent then leaves its installed packages alone, so a fresh or
	// wiped server never makes a fleet remove its software.
	Unset bool `json:"unset,omitempty"`
	// Error says why the desired state cannot be resolved for this device
	// (no fitting build, ambiguous builds...); the agent changes nothing.
	Error string `json:"error,omitempty"`
	// Init are the init entries of the device's groups, in order; part of
	// Digest.
	Init []ResolvedInit `json:"init,omitempty"`
}

// InstalledApp is what an agent reports of one installed package.
type InstalledApp struct {
	Name     string   `json:"name" yaml:"name"`
	Version  string   `json:"version" yaml:"version"`
	Tags     []string `json:"tags" yaml:"tags"`
	Digest   string   `json:"digest,omitempty" yaml:"digest,omitempty"`
	Instance string   `json:"instance,omitempty" yaml:"instance,omitempty"`
	Install  string   `json:"install,omitempty" yaml:"install,omitempty"`
	// Previous is the version kept on disk for a rollback without download.
	Previous string `json:"previous,omitempty" yaml:"previous,omitempty"`
	// ParamsDigest identifies the parameter values the app was last
	// configured with (param.Digest); a change alone is a reconfigure.
	ParamsDigest string `json:"params_digest,omitempty" yaml:"params_digest,omitempty"`
}

// Report is what an agent sends: facts, tags and installed state.
type Report struct {
	Facts     map[string]string `json:"facts"`
	Tags      []string          `json:"tags"` // system tags: detected facts + --tags
	Labels    map[string]string `json:"labels,omitempty"`
	Installed []InstalledApp    `json:"installed"`
	// Applied is the digest of the resolved state the device last converged to.
	Applied string `json:"applied,omitempty"`
	// Error is the last convergence error, empty when the last run succeeded.
	Error string `json:"error,omitempty"`
	// ErrorDigest is the digest of the resolved state whose convergence
	// failed with Error, when it got that far (not from older agents).
	ErrorDigest  string `json:"error_digest,omitempty"`
	AgentVersion string `json:"agent_version,omitempty"`
	// Health is the state of the health checks; nil from agents that
	// predate them.
	Health *HealthReport `json:"health,omitempty"`
	// Services are the package services the agent supervises.
	Services []ServiceState `json:"services,omitempty"`
	// ProbeResults are the outcomes of the probes the server asked for
	// (api/netcheck.go).
	ProbeResults []ProbeResult `json:"probe_results,omitempty"`
	// Init are the init entries that succeeded on the device.
	Init []InitRecord `json:"init,omitempty"`
}

// ReportResponse answers a report.
type ReportResponse struct {
	Desired string `json:"desired"` // digest of the current resolved state
	// Probes are network checks of other devices' services to run and
	// report with the next report; absent from servers that predate them.
	Probes []Probe `json:"probes,omitempty"`
}

// Device is the server's view of one device.
type Device struct {
	ID        string            `json:"id" yaml:"id"`
	Tags      []string          `json:"systemtags" yaml:"systemtags"`
	Labels    map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	Facts     map[string]string `json:"facts,omitempty" yaml:"facts,omitempty"`
	Installed []InstalledApp    `json:"apps" yaml:"apps"`
	LastSeen  time.Time         `json:"last_seen" yaml:"last_seen"`
	Applied   string            `json:"applied,omitempty" yaml:"applied,omitempty"`
	Desired   string            `json:"desired,omitempty" yaml:"desired,omitempty"`
	Converged bool              `json:"converged" yaml:"converged"`
	Error     string            `json:"error,omitempty" yaml:"error,omitempty"`
	// ErrorDigest is the resolved state Error belongs to (Report).
	ErrorDigest string `json:"error_digest,omitempty" yaml:"error_digest,omitempty"`
	Health      string `json:"health,omitempty" yaml:"health,omitempty"`
	// HealthChecks, Keepalive and Termination: health checks and
	// termination (api/health.go). Keepalive and Termination are owned by
	// the server and survive reports.
	HealthChecks []HealthCheck `json:"health_checks,omitempty" yaml:"health_checks,omitempty"`
	Keepalive    *Keepalive    `json:"keepalive,omitempty" yaml:"keepalive,omitempty"`
	Termination  *Termination  `json:"termination,omitempty" yaml:"termination,omitempty"`
	// Services are the package services the agent supervises (api/service.go).
	Services []ServiceState `json:"services,omitempty" yaml:"services,omitempty"`
	// Addr is the address the device's last report came from: where its
	// peers probe its services' network checks. Owned by the server.
	Addr string `json:"addr,omitempty" yaml:"addr,omitempty"`
	// NetObservations are its peers' latest network check results of its
	// services (api/netcheck.go). Owned by the server; survive reports.
	NetObservations []NetObservation `json:"net_observations,omitempty" yaml:"-"`
	// Init are the init entries the device reports done.
	Init []InitRecord `json:"init,omitempty" yaml:"init,omitempty"`
	// Effective is the device's effective desired state, each app with
	// the document that gave it; set by GET /v1/devices/{id} only.
	Effective []EffectiveApp `json:"effective,omitempty" yaml:"effective,omitempty"`
}

// MissingRequest asks which of these blobs the server lacks.
type MissingRequest struct {
	Digests []string `json:"digests"`
}

// MissingResponse lists the blobs the server lacks.
type MissingResponse struct {
	Missing []string `json:"missing"`
}

// TrustUpload is the body of PUT /v1/trust/targets: signed targets
// metadata (bins) by role name, each exactly as signed.
type TrustUpload struct {
	Roles map[string][]byte `json:"roles"`
}

// RenewRequest is the body of POST /v1/devices/{id}/certificate: a
// certificate request (PEM) for the device's own name.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// RenewResponse answers it: the new certificate, then its issuer's (PEM).
type RenewResponse struct {
	Certificate string `json:"certificate"`
}

// PackRequest asks POST /v1/blobs/pack for many blobs in one compressed
// stream (see package transfer). A device may ask only for blobs it may
// read one by one.
type PackRequest struct {
	Digests []string `json:"digests"`
	// Bases maps a wanted digest to a blob the device already has (the
	// same file of the version it has installed); the server may answer
	// a delta against it instead of the whole blob.
	Bases map[string]string `json:"bases,omitempty"`
	// Format is the highest pack format the device reads (2: entries
	// named by their place in Digests, x86-filtered entries); 0 means 1.
	// A server answers the highest it writes, at most this; the stream's
	// first bytes say which.
	Format int `json:"format,omitempty"`
}
