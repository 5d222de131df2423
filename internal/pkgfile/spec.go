package pkgfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"github.com/drover-dev/drover/internal/api"
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
	// Parameter names become DROVER_PARAM_<NAME> and .Params.NAME in
	// templates, so they must be identifiers in both worlds.
	paramNameRe   = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,63}$`)
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
	s.Tags = sortedTags(s.Tags)
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

// sortedTags returns tags sorted and without duplicates, never nil, so the
// manifest says "tags": [] rather than null.
func sortedTags(tags []string) []string {
	out := slices.Clone(tags)
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
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
// default and allowed values converted to the declared type (int64,
// float64, string, bool or []any), so YAML and JSON inputs give the same
// manifest.
func validateParam(name string, p api.Param) (api.Param, error) {
	if !paramNameRe.MatchString(name) {
		return p, fmt.Errorf("parameter name %q: want a letter or '_', then letters, digits or '_' (at most 64)", name)
	}
	switch p.Type {
	case ParamString, ParamInt, ParamFloat, ParamBool, ParamList:
	default:
		return p, fmt.Errorf("type %q: want string, int, float, bool or list", p.Type)
	}
	numeric := p.Type == ParamInt || p.Type == ParamFloat
	if (p.Min != nil || p.Max != nil) && !numeric {
		return p, fmt.Errorf("min and max apply only to int and float parameters")
	}
	for _, b := range []*float64{p.Min, p.Max} {
		if b != nil && (math.IsNaN(*b) || math.IsInf(*b, 0)) {
			return p, fmt.Errorf("min and max must be finite numbers")
		}
	}
	if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
		return p, fmt.Errorf("min %v is above max %v", *p.Min, *p.Max)
	}
	if p.Allowed != nil && p.Type != ParamString && !numeric {
		return p, fmt.Errorf("allowed applies only to string, int and float parameters")
	}
	if p.Required && p.Default != nil {
		return p, fmt.Errorf("a required parameter has no default; drop one of them")
	}
	if len(p.Description) > 4096 {
		return p, fmt.Errorf("description longer than 4096 bytes")
	}
	if p.Allowed != nil {
		allowed := make([]any, 0, len(p.Allowed))
		for _, a := range p.Allowed {
			v, err := paramValue(p, a)
			if err != nil {
				return p, fmt.Errorf("allowed value: %w", err)
			}
			allowed = append(allowed, v)
		}
		p.Allowed = allowed
	}
	if p.Default != nil {
		v, err := paramValue(p, p.Default)
		if err != nil {
			return p, fmt.Errorf("default: %w", err)
		}
		if p.Allowed != nil && !slices.ContainsFunc(p.Allowed, func(a any) bool { return a == v }) {
			return p, fmt.Errorf("default %v is not one of the allowed values", v)
		}
		p.Default = v
	}
	return p, nil
}

// paramValue converts v to p's type and checks it against p's bounds.
func paramValue(p api.Param, v any) (any, error) {
	switch p.Type {
	case ParamString:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%v is not a string", v)
		}
		return s, nil
	case ParamBool:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%v is not a bool", v)
		}
		return b, nil
	case ParamInt:
		i, ok := asInt(v)
		if !ok {
			return nil, fmt.Errorf("%v is not an int", v)
		}
		if err := inBounds(p, float64(i)); err != nil {
			return nil, err
		}
		return i, nil
	case ParamFloat:
		f, ok := asFloat(v)
		if !ok {
			return nil, fmt.Errorf("%v is not a number", v)
		}
		if err := inBounds(p, f); err != nil {
			return nil, err
		}
		return f, nil
	case ParamList:
		l, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("%v is not a list", v)
		}
		out := make([]any, 0, len(l))
		for _, e := range l {
			switch e := e.(type) {
			case string, bool:
				out = append(out, e)
			default:
				if i, ok := asInt(e); ok {
					out = append(out, i)
				} else if f, ok := asFloat(e); ok {
					out = append(out, f)
				} else {
					return nil, fmt.Errorf("list element %v is not a string, number or bool", e)
				}
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("type %q: unknown", p.Type)
}

func inBounds(p api.Param, f float64) error {
	if p.Min != nil && f < *p.Min {
		return fmt.Errorf("%v is below min %v", f, *p.Min)
	}
	if p.Max != nil && f > *p.Max {
		return fmt.Errorf("%v is above max %v", f, *p.Max)
	}
	return nil
}

// asInt accepts the integer forms YAML (int, uint64) and JSON (float64)
// decoders produce.
func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case uint64:
		return int64(v), v <= math.MaxInt64
	case float64:
		if v != math.Trunc(v) || v < -(1<<63) || v >= 1<<63 {
			return 0, false
		}
		return int64(v), true
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float64:
		return v, !math.IsNaN(v) && !math.IsInf(v, 0)
	}
	return 0, false
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
	return nil
}
