package pkgfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/api"
	"github.com/drover-dev/drover/internal/param"
)

// Spec is drover.yaml, the manifest a package author writes. ParseSpec
// returns it validated and normalized: defaults filled in, tags sorted and
// deduplicated, parameter values converted to their declared type.
type Spec struct {
	Group     string               `yaml:"group"`
	Name      string               `yaml:"name"`
	Version   string               `yaml:"version"`
	Tags      []string             `yaml:"tags"`
	Install   string               `yaml:"install"`
	Depends   []api.Dependency     `yaml:"depends"`
	Params    map[string]api.Param `yaml:"params"`
	Templates []api.Template       `yaml:"templates"`
	Services  []api.Service        `yaml:"services"`
}

// Parameter types and service restart policies.
const (
	ParamString = "string"
	ParamInt    = "int"
	ParamFloat  = "float"
	ParamBool   = "bool"
	ParamList   = "list"

	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

var (
	serviceNameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)
)

// maxSpecSize bounds drover.yaml; a real one is a few kilobytes.
const maxSpecSize = 1 << 20

// ParseSpec parses drover.yaml strictly: unknown fields, duplicate keys and
// more than one YAML document are errors. Every error wraps ErrInvalid and,
// where it can, names the line.
func ParseSpec(data []byte) (spec *Spec, err error) {
	if len(data) > maxSpecSize {
		return nil, invalidf("drover.yaml: larger than %d bytes", maxSpecSize)
	}
	// The YAML decoder reports errors by panicking internally and
	// recovering; a bug there must still not take the caller down.
	defer func() {
		if r := recover(); r != nil {
			spec, err = nil, invalidf("drover.yaml: unparsable YAML (%v)", r)
		}
	}()
	var s Spec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, invalidf("drover.yaml: empty")
		}
		return nil, invalidf("drover.yaml: %s", yamlMessage(err))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, invalidf("drover.yaml: want one YAML document, found more")
	}
	// A second, loose parse keeps the node tree so that validation errors
	// can name a line.
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc)
	if err := s.normalize(&doc); err != nil {
		return nil, err
	}
	return &s, nil
}

var unknownFieldRe = regexp.MustCompile(`field (\S+) not found in type [\w.]+`)

// yamlMessage flattens the decoder's multi-line "unmarshal errors" text
// and says "unknown field" without naming Go types.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	return unknownFieldRe.ReplaceAllString(msg, "unknown field $1")
}

// normalize validates s, fills in defaults and converts parameter values.
func (s *Spec) normalize(doc *yaml.Node) error {
	at := func(keys ...any) string {
		if line := lineOf(doc, keys...); line > 0 {
			return "drover.yaml line " + strconv.Itoa(line)
		}
		return "drover.yaml"
	}
	fail := func(err error, keys ...any) error {
		return invalidf("%s: %s: %v", at(keys...), fieldName(keys), err)
	}
	c := api.Coordinate{Group: s.Group, Name: s.Name, Version: s.Version}
	if s.Group == "" {
		return fail(errors.New("required"), "group")
	}
	if s.Name == "" {
		return fail(errors.New("required"), "name")
	}
	if s.Version == "" {
		return fail(errors.New("required"), "version")
	}
	if err := c.Validate(); err != nil {
		key := "version"
		switch {
		case !api.ValidGroup(s.Group):
			key = "group"
		case !api.ValidName(s.Name):
			key = "name"
		}
		// The error already names the field.
		return invalidf("%s: %v", at(key), err)
	}
	for i, t := range s.Tags {
		if !api.ValidTag(t) {
			return fail(fmt.Errorf("tag %q: want letters, digits, '.', '_', '+' and '-'", t), "tags", i)
		}
	}
	s.Tags = api.NormalizeTags(s.Tags)
	if s.Install == "" {
		s.Install = api.InstallPrefix
	}
	if err := validateInstall(s.Install); err != nil {
		return fail(err, "install")
	}
	self := c.PackageName()
	seenDep := map[string]bool{}
	for i, d := range s.Depends {
		if err := validateDependency(d, self, seenDep); err != nil {
			return fail(err, "depends", i)
		}
	}
	for name, p := range s.Params {
		if p.Type == "" {
			p.Type = ParamString
		}
		np, err := validateParam(name, p)
		if err != nil {
			return fail(err, "params", name)
		}
		s.Params[name] = np
	}
	seenDest := map[string]bool{}
	for i, t := range s.Templates {
		if err := validateTemplate(t, seenDest); err != nil {
			return fail(err, "templates", i)
		}
	}
	seenSvc := map[string]bool{}
	for i := range s.Services {
		if s.Services[i].Restart == "" {
			s.Services[i].Restart = RestartOnFailure
		}
		if err := validateService(s.Services[i], seenSvc); err != nil {
			return fail(err, "services", i)
		}
	}
	return nil
}

// fieldName renders a key path like params.port or services[1].
func fieldName(keys []any) string {
	var b strings.Builder
	for _, k := range keys {
		switch k := k.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", k)
		default:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, k)
		}
	}
	return b.String()
}

// lineOf returns the line of the node found by following keys (mapping
// keys as strings, sequence indexes as ints) from the document root, or of
// the deepest node found on the way; 0 if there is none.
func lineOf(doc *yaml.Node, keys ...any) int {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := n.Line
	for _, k := range keys {
		var next *yaml.Node
		switch k := k.(type) {
		case int:
			if n.Kind == yaml.SequenceNode && k >= 0 && k < len(n.Content) {
				next = n.Content[k]
			}
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						line = n.Content[i].Line
						next = n.Content[i+1]
						break
					}
				}
			}
		}
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}

func validateInstall(mode string) error {
	if mode != api.InstallPrefix && mode != api.InstallRoot {
		return fmt.Errorf("install mode %q: want %s or %s", mode, api.InstallPrefix, api.InstallRoot)
	}
	return nil
}

// validateDependency checks one dependency; seen collects names so that a
// package is not listed twice.
func validateDependency(d api.Dependency, self string, seen map[string]bool) error {
	if _, _, err := api.ParsePackageName(d.Name); err != nil {
		return err
	}
	if d.Name == self {
		return fmt.Errorf("package %s depends on itself", d.Name)
	}
	if seen[d.Name] {
		return fmt.Errorf("%s listed twice", d.Name)
	}
	seen[d.Name] = true
	if d.Version != "" {
		if len(d.Version) > 256 {
			return fmt.Errorf("%s: version constraint longer than 256 bytes", d.Name)
		}
		if _, err := semver.NewConstraint(d.Version); err != nil {
			return fmt.Errorf("%s: version constraint %q: %v", d.Name, d.Version, err)
		}
	}
	return nil
}

// validateParam checks a parameter declaration and returns it with its
// default and allowed values converted to the declared type; the rules
// live in package param, shared with the server and the agent.
func validateParam(name string, p api.Param) (api.Param, error) {
	if p.Type == "" {
		return p, fmt.Errorf("type: required")
	}
	return param.CheckDecl(name, p)
}

// validateTemplate checks one template; seen collects destinations.
func validateTemplate(t api.Template, seen map[string]bool) error {
	if err := checkPath(t.Src); err != nil {
		return fmt.Errorf("src: %w", err)
	}
	if err := checkPath(t.Dest); err != nil {
		return fmt.Errorf("dest: %w", err)
	}
	if seen[t.Dest] {
		return fmt.Errorf("dest %q: used by two templates", t.Dest)
	}
	seen[t.Dest] = true
	return nil
}

// validateService checks one service; seen collects names.
func validateService(s api.Service, seen map[string]bool) error {
	if !serviceNameRe.MatchString(s.Name) {
		return fmt.Errorf("name %q: want 1 to 64 letters, digits, '_' or '-'", s.Name)
	}
	if seen[s.Name] {
		return fmt.Errorf("name %q: used by two services", s.Name)
	}
	seen[s.Name] = true
	if s.Start == "" {
		return fmt.Errorf("service %s: start is required", s.Name)
	}
	for _, f := range []struct{ key, val string }{{"start", s.Start}, {"stop", s.Stop}, {"health", s.Health}} {
		if f.val == "" {
			continue
		}
		if err := checkPath(f.val); err != nil {
			return fmt.Errorf("service %s: %s: %w (want a path relative to the install location)", s.Name, f.key, err)
		}
	}
	switch s.Restart {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("service %s: restart %q: want always, on-failure or never", s.Name, s.Restart)
	}
	if err := validateNetChecks(s); err != nil { // netchecks.go
		return err
	}
	if len(s.Ports) > maxServicePorts {
		return fmt.Errorf("service %s: ports: at most %d", s.Name, maxServicePorts)
	}
	seenPort := map[int]bool{}
	for _, p := range s.Ports {
		if p < 1 || p > 65535 {
			return fmt.Errorf("service %s: ports: %d: want a TCP port from 1 to 65535", s.Name, p)
		}
		if seenPort[p] {
			return fmt.Errorf("service %s: ports: %d is listed twice", s.Name, p)
		}
		seenPort[p] = true
	}
	if s.Startup != "" && len(s.Ports) == 0 {
		return fmt.Errorf("service %s: startup: it bounds the wait for ports: declare ports", s.Name)
	}
	if _, err := StartupTimeout(s); err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	if _, _, err := ConsoleLimits(s); err != nil {
		return fmt.Errorf("service %s: %w", s.Name, err)
	}
	return nil
}

// Service settings' defaults and bounds.
const (
	// DefaultStartup is how long a service with ports has to accept
	// connections on them.
	DefaultStartup = 30 * time.Second
	maxStartup     = time.Hour
	// DefaultConsoleMaxSize and DefaultConsoleKeep: console files rotate
	// at 10MB and five old ones are kept.
	DefaultConsoleMaxSize = 10_000_000
	DefaultConsoleKeep    = 5
	minConsoleMaxSize     = 1000
	maxConsoleKeep        = 100
	maxServicePorts       = 16
)

// StartupTimeout returns how long a start of s has for its ports to
// accept connections: its startup, or DefaultStartup.
func StartupTimeout(s api.Service) (time.Duration, error) {
	if s.Startup == "" {
		return DefaultStartup, nil
	}
	d, err := time.ParseDuration(s.Startup)
	if err != nil || d <= 0 || d > maxStartup {
		return 0, fmt.Errorf("startup %q: want a duration like 30s or 2m, at most 1h", s.Startup)
	}
	return d, nil
}

// ConsoleLimits returns the size at which s's console files rotate and
// how many old ones are kept, defaults filled in.
func ConsoleLimits(s api.Service) (maxSize int64, keep int, err error) {
	maxSize, keep = DefaultConsoleMaxSize, DefaultConsoleKeep
	if s.Console == nil {
		return maxSize, keep, nil
	}
	if s.Console.MaxSize != "" {
		if maxSize, err = api.ParseSize(s.Console.MaxSize); err != nil || maxSize < minConsoleMaxSize {
			return 0, 0, fmt.Errorf("console: max-size %q: want a size like 10MB, 512KiB or 1000000 (at least 1kB)", s.Console.MaxSize)
		}
	}
	if s.Console.Keep != nil {
		keep = *s.Console.Keep
		if keep < 1 || keep > maxConsoleKeep {
			return 0, 0, fmt.Errorf("console: keep %d: want 1 to %d old files", keep, maxConsoleKeep)
		}
	}
	return maxSize, keep, nil
}
