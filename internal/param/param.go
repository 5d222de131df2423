// Package param resolves package parameters (DESIGN §2, JPackages' @ASK):
// a package declares each parameter with a type, default, bounds and
// allowed values; values come in layers, least to most specific (package
// default < fleet < device < desired-state entry), and Resolve merges them
// and checks every one against its declaration before anything on a
// device is touched. It also renders the package's templates with the
// result.
//
// Values are held in their declared Go type: string, int64, float64, bool
// or []any. Convert accepts what the YAML (int, uint64) and JSON (float64)
// decoders produce and what a command line gives (strings).
package param

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/drover-dev/drover/internal/api"
)

// Parameter types.
const (
	TypeString = "string"
	TypeInt    = "int"
	TypeFloat  = "float"
	TypeBool   = "bool"
	TypeList   = "list"
)

// Errors callers branch on; every error of Resolve wraps one of them and
// is an *Error naming the parameter.
var (
	// ErrInvalid: a value of the wrong type, out of bounds or not allowed.
	ErrInvalid = errors.New("invalid value")
	// ErrMissing: a required parameter has no value.
	ErrMissing = errors.New("required parameter has no value")
	// ErrUndeclared: a value for a parameter the package does not declare.
	ErrUndeclared = errors.New("undeclared parameter")
)

// Error is a problem with one parameter.
type Error struct {
	Param string // the parameter's name
	Layer string // where the bad value came from: default, fleet, device, entry...; "" if none
	Err   error  // wraps ErrInvalid, ErrMissing or ErrUndeclared
}

// Error reads "parameter port (device value): 70000 is above max 65535".
func (e *Error) Error() string {
	where := ""
	if e.Layer != "" {
		where = " (" + e.Layer + " value)"
	}
	return fmt.Sprintf("parameter %s%s: %v", e.Param, where, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// nameRe: parameter names become DROVER_PARAM_<NAME>, --NAME= flags and
// .Params.NAME in templates, so they must be identifiers in every world.
var nameRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,63}$`)

// ValidName reports whether n may name a parameter.
func ValidName(n string) bool { return nameRe.MatchString(n) }

// CheckDecl checks a parameter declaration and returns it with its type
// defaulted to string and its default and allowed values converted to the
// declared type, so YAML and JSON inputs give the same manifest.
func CheckDecl(name string, p api.Param) (api.Param, error) {
	if !ValidName(name) {
		return p, fmt.Errorf("parameter name %q: want a letter or '_', then letters, digits or '_' (at most 64)", name)
	}
	if p.Type == "" {
		p.Type = TypeString
	}
	switch p.Type {
	case TypeString, TypeInt, TypeFloat, TypeBool, TypeList:
	default:
		return p, fmt.Errorf("type %q: want string, int, float, bool or list", p.Type)
	}
	numeric := p.Type == TypeInt || p.Type == TypeFloat
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
	if p.Allowed != nil && p.Type != TypeString && !numeric {
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
			v, err := convert(p, a)
			if err != nil {
				return p, fmt.Errorf("allowed value: %w", err)
			}
			allowed = append(allowed, v)
		}
		p.Allowed = allowed
	}
	if p.Default != nil {
		v, err := convert(p, p.Default)
		if err != nil {
			return p, fmt.Errorf("default: %w", err)
		}
		if !isAllowed(p, v) {
			return p, fmt.Errorf("default %v is not one of the allowed values", v)
		}
		p.Default = v
	}
	return p, nil
}

// Convert converts v to p's type and checks it against p's bounds and
// allowed values. Strings are parsed for the other types ("8080", "true",
// "a,b"), as a command line or a prompt gives them.
func Convert(p api.Param, v any) (any, error) {
	if p.Type == "" {
		p.Type = TypeString
	}
	if s, ok := v.(string); ok && p.Type != TypeString {
		parsed, err := parse(p.Type, s)
		if err != nil {
			return nil, err
		}
		v = parsed
	}
	out, err := convert(p, v)
	if err != nil {
		return nil, err
	}
	if !isAllowed(p, out) {
		return nil, fmt.Errorf("%v is not one of the allowed values (%s)", out, Format(p.Allowed))
	}
	return out, nil
}

func isAllowed(p api.Param, v any) bool {
	if p.Allowed == nil {
		return true
	}
	return slices.ContainsFunc(p.Allowed, func(a any) bool {
		if af, ok := asFloat(a); ok {
			if vf, ok := asFloat(v); ok {
				return af == vf
			}
		}
		return a == v
	})
}

// parse reads a string as a value of type typ.
func parse(typ, s string) (any, error) {
	switch typ {
	case TypeInt:
		i, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an int", s)
		}
		return i, nil
	case TypeFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	case TypeBool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not a bool (true or false)", s)
		}
		return b, nil
	case TypeList:
		if strings.TrimSpace(s) == "" {
			return []any{}, nil
		}
		var out []any
		for _, e := range strings.Split(s, ",") {
			out = append(out, strings.TrimSpace(e))
		}
		return out, nil
	}
	return s, nil
}

// convert converts v to p's type and checks it against p's bounds.
func convert(p api.Param, v any) (any, error) {
	switch p.Type {
	case TypeString:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%v is not a string", v)
		}
		return s, nil
	case TypeBool:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%v is not a bool", v)
		}
		return b, nil
	case TypeInt:
		i, ok := asInt(v)
		if !ok {
			return nil, fmt.Errorf("%v is not an int", v)
		}
		if err := inBounds(p, float64(i)); err != nil {
			return nil, err
		}
		return i, nil
	case TypeFloat:
		f, ok := asFloat(v)
		if !ok {
			return nil, fmt.Errorf("%v is not a number", v)
		}
		if err := inBounds(p, f); err != nil {
			return nil, err
		}
		return f, nil
	case TypeList:
		l, ok := v.([]any)
		if !ok {
			if ls, ok2 := v.([]string); ok2 {
				for _, s := range ls {
					l = append(l, s)
				}
				ok = true
			}
		}
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
	case int32:
		return int64(v), true
	case uint64:
		return int64(v), v <= math.MaxInt64
	case float64:
		if v != math.Trunc(v) || v < -(1<<63) || v >= 1<<63 {
			return 0, false
		}
		return int64(v), true
	case json.Number:
		i, err := v.Int64()
		return i, err == nil
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case int32:
		return float64(v), true
	case uint64:
		return float64(v), true
	case float64:
		return v, !math.IsNaN(v) && !math.IsInf(v, 0)
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	}
	return 0, false
}

// Layer is one source of values, named for messages (fleet, device,
// entry, command line).
type Layer struct {
	Name   string
	Values map[string]any
}

// Resolve merges the layers over the declared defaults, the later layer
// winning, converts every value to its declared type and checks it. A
// value for an undeclared parameter, a value that does not fit its
// declaration, or a required parameter left without one is an *Error
// naming the parameter; the first by name is returned, so the answer is
// deterministic. The result holds a value for every parameter that has
// one (declared without default and not required: absent).
func Resolve(decls map[string]api.Param, layers ...Layer) (map[string]any, error) {
	out := map[string]any{}
	from := map[string]string{}
	for _, name := range sortedKeys(decls) {
		if d := decls[name].Default; d != nil {
			out[name], from[name] = d, "default"
		}
	}
	for _, l := range layers {
		for _, name := range sortedKeys(l.Values) {
			if _, ok := decls[name]; !ok {
				return nil, &Error{Param: name, Layer: l.Name, Err: fmt.Errorf("%w: the package declares %s", ErrUndeclared, declared(decls))}
			}
			out[name], from[name] = l.Values[name], l.Name
		}
	}
	for _, name := range sortedKeys(decls) {
		p := decls[name]
		v, ok := out[name]
		if !ok {
			if p.Required {
				return nil, &Error{Param: name, Err: describeMissing(p)}
			}
			continue
		}
		cv, err := Convert(p, v)
		if err != nil {
			return nil, &Error{Param: name, Layer: from[name], Err: fmt.Errorf("%w: %v", ErrInvalid, err)}
		}
		out[name] = cv
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// Missing lists, sorted, the required parameters that no layer gives a
// value: what an interactive install asks for.
func Missing(decls map[string]api.Param, layers ...Layer) []string {
	var out []string
	for _, name := range sortedKeys(decls) {
		if !decls[name].Required {
			continue
		}
		found := false
		for _, l := range layers {
			if _, ok := l.Values[name]; ok {
				found = true
			}
		}
		if !found {
			out = append(out, name)
		}
	}
	return out
}

func describeMissing(p api.Param) error {
	if p.Description != "" {
		return fmt.Errorf("%w (%s)", ErrMissing, p.Description)
	}
	return ErrMissing
}

func declared(decls map[string]api.Param) string {
	if len(decls) == 0 {
		return "no parameters"
	}
	return strings.Join(sortedKeys(decls), ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// String formats one value the way scripts (DROVER_PARAM_<NAME>) and
// service flags (--NAME=VALUE) see it: numbers in their shortest form,
// lists joined by commas.
func String(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		if i, ok := asInt(v); ok && math.Abs(v) < 1<<53 {
			return strconv.FormatInt(i, 10)
		}
		return strconv.FormatFloat(v, 'g', -1, 64)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = String(e)
		}
		return strings.Join(parts, ",")
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// Format formats a list of values for messages and prompts.
func Format(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = String(v)
	}
	return strings.Join(parts, ", ")
}

// Strings formats every value with String; nil for no values.
func Strings(values map[string]any) map[string]string {
	if len(values) == 0 {
		return nil
	}
	out := make(map[string]string, len(values))
	for k, v := range values {
		out[k] = String(v)
	}
	return out
}

// Digest identifies a set of formatted values: "" for none, else the hex
// SHA-256 of the sorted name=value lines. The agent records it with each
// install so a change of values alone is seen and reconfigured.
func Digest(values map[string]string) string {
	if len(values) == 0 {
		return ""
	}
	h := sha256.New()
	for _, k := range sortedKeys(values) {
		fmt.Fprintf(h, "%s=%q\n", k, values[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Describe is one line about a declaration, for prompts and docs:
// "int, default 8080, 1..65535: listen port".
func Describe(p api.Param) string {
	typ := p.Type
	if typ == "" {
		typ = TypeString
	}
	parts := []string{typ}
	if p.Default != nil {
		parts = append(parts, "default "+String(p.Default))
	}
	if p.Min != nil || p.Max != nil {
		lo, hi := "", ""
		if p.Min != nil {
			lo = strconv.FormatFloat(*p.Min, 'g', -1, 64)
		}
		if p.Max != nil {
			hi = strconv.FormatFloat(*p.Max, 'g', -1, 64)
		}
		parts = append(parts, lo+".."+hi)
	}
	if p.Allowed != nil {
		parts = append(parts, "one of "+Format(p.Allowed))
	}
	s := strings.Join(parts, ", ")
	if p.Description != "" {
		s += ": " + p.Description
	}
	return s
}

// EnvName is the environment variable that carries parameter name to
// scripts and services: DROVER_PARAM_ and the name in upper case, any
// character but letters and digits as '_'.
func EnvName(name string) string {
	var b strings.Builder
	b.WriteString("DROVER_PARAM_")
	for _, r := range strings.ToUpper(name) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
