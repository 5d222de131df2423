// Package selector parses and matches label selectors in Kubernetes'
// syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`
// (exists) and `!k` (absent), terms separated by commas and ANDed. The
// empty selector matches every label set.
package selector

import (
	"fmt"
	"slices"
	"strings"
)

// Op is the operator of one term.
type Op string

// Operators of a term.
const (
	Equals    Op = "="
	NotEquals Op = "!="
	In        Op = "in"
	NotIn     Op = "notin"
	Exists    Op = "exists"
	Absent    Op = "!"
)

// Term is one requirement on one label.
type Term struct {
	Key    string
	Op     Op
	Values []string // one for = and !=, one or more for in and notin, none else
}

// Selector is a parsed selector: every term must hold.
type Selector struct {
	terms []Term
}

// Error is a parse error at a byte position of the selector.
type Error struct {
	Selector string
	Pos      int // 0-based byte offset
	Msg      string
}

func (e *Error) Error() string {
	return fmt.Sprintf("selector %q: %s at column %d", e.Selector, e.Msg, e.Pos+1)
}

// maxLen bounds a selector: it is operator input stored with a document.
const maxLen = 4096

// Parse parses s. The error, an *Error, names the column of the problem.
func Parse(s string) (Selector, error) {
	if len(s) > maxLen {
		return Selector{}, &Error{Selector: s[:32] + "...", Pos: maxLen, Msg: fmt.Sprintf("longer than %d bytes", maxLen)}
	}
	p := &parser{s: s}
	var terms []Term
	p.space()
	if p.eof() {
		return Selector{}, nil
	}
	for {
		t, err := p.term()
		if err != nil {
			return Selector{}, err
		}
		terms = append(terms, t)
		p.space()
		if p.eof() {
			break
		}
		if !p.take(",") {
			return Selector{}, p.errorf("want ',' between terms")
		}
		p.space()
	}
	return Selector{terms: terms}, nil
}

// Terms returns the number of terms: a selector's specificity.
func (s Selector) Terms() int { return len(s.terms) }

// List returns a copy of the terms, in the order written.
func (s Selector) List() []Term {
	out := make([]Term, len(s.terms))
	for i, t := range s.terms {
		out[i] = Term{Key: t.Key, Op: t.Op, Values: slices.Clone(t.Values)}
	}
	return out
}

// Matches reports whether labels satisfy every term.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s.terms {
		if !t.Matches(labels) {
			return false
		}
	}
	return true
}

// Matches reports whether labels satisfy t. As in Kubernetes, `k!=v` and
// `k notin (...)` hold for a label set without k.
func (t Term) Matches(labels map[string]string) bool {
	v, ok := labels[t.Key]
	switch t.Op {
	case Equals:
		return ok && v == t.Values[0]
	case NotEquals:
		return !ok || v != t.Values[0]
	case In:
		return ok && slices.Contains(t.Values, v)
	case NotIn:
		return !ok || !slices.Contains(t.Values, v)
	case Exists:
		return ok
	case Absent:
		return !ok
	}
	return false
}

// String writes the selector in canonical form.
func (s Selector) String() string {
	parts := make([]string, len(s.terms))
	for i, t := range s.terms {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

// String writes the term in canonical form.
func (t Term) String() string {
	switch t.Op {
	case Equals, NotEquals:
		return t.Key + string(t.Op) + t.Values[0]
	case In, NotIn:
		return t.Key + " " + string(t.Op) + " (" + strings.Join(t.Values, ",") + ")"
	case Absent:
		return "!" + t.Key
	}
	return t.Key
}

type parser struct {
	s   string
	pos int
}

func (p *parser) eof() bool { return p.pos >= len(p.s) }

func (p *parser) errorf(format string, args ...any) error {
	return &Error{Selector: p.s, Pos: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) space() {
	for !p.eof() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *parser) take(tok string) bool {
	if strings.HasPrefix(p.s[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

// word reads a key or value: letters, digits, '-', '_', '.', '/'.
func (p *parser) word() string {
	start := p.pos
	for !p.eof() && wordByte(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
}

// validKey and validValue follow Kubernetes' label rules loosely: keys
// and values start and end with a letter or digit; values may be empty.
func validWord(w string) bool {
	if w == "" || len(w) > 253 {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	return alnum(w[0]) && alnum(w[len(w)-1])
}

func (p *parser) key() (string, error) {
	start := p.pos
	k := p.word()
	if k == "" {
		if p.eof() {
			return "", p.errorf("want a label key, got the end")
		}
		return "", p.errorf("want a label key, got %q", p.s[p.pos])
	}
	if !validWord(k) {
		p.pos = start
		return "", p.errorf("label key %q must start and end with a letter or digit", k)
	}
	return k, nil
}

func (p *parser) value() (string, error) {
	start := p.pos
	v := p.word()
	if v != "" && !validWord(v) {
		p.pos = start
		return "", p.errorf("label value %q must start and end with a letter or digit", v)
	}
	return v, nil
}

func (p *parser) term() (Term, error) {
	if p.take("!") {
		if p.take("=") {
			p.pos -= 2
			return Term{}, p.errorf("want a label key before '!='")
		}
		p.space()
		k, err := p.key()
		if err != nil {
			return Term{}, err
		}
		return Term{Key: k, Op: Absent}, nil
	}
	k, err := p.key()
	if err != nil {
		return Term{}, err
	}
	p.space()
	switch {
	case p.eof() || p.s[p.pos] == ',':
		return Term{Key: k, Op: Exists}, nil
	case p.take("!="):
		return p.single(k, NotEquals)
	case p.take("=="), p.take("="):
		return p.single(k, Equals)
	}
	op := p.word()
	switch op {
	case "in":
		return p.set(k, In)
	case "notin":
		return p.set(k, NotIn)
	}
	p.pos -= len(op)
	return Term{}, p.errorf("want =, ==, !=, in or notin after %q", k)
}

func (p *parser) single(k string, op Op) (Term, error) {
	p.space()
	v, err := p.value()
	if err != nil {
		return Term{}, err
	}
	if !p.eof() && p.s[p.pos] != ',' && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' {
		return Term{}, p.errorf("unexpected %q in the value of %q", p.s[p.pos], k)
	}
	return Term{Key: k, Op: op, Values: []string{v}}, nil
}

func (p *parser) set(k string, op Op) (Term, error) {
	p.space()
	if !p.take("(") {
		return Term{}, p.errorf("want '(' after %q", string(op))
	}
	var vals []string
	for {
		p.space()
		v, err := p.value()
		if err != nil {
			return Term{}, err
		}
		if v == "" {
			return Term{}, p.errorf("want a value in the list of %q", k)
		}
		vals = append(vals, v)
		p.space()
		if p.take(")") {
			break
		}
		if !p.take(",") {
			if p.eof() {
				return Term{}, p.errorf("want ')' to close the list of %q", k)
			}
			return Term{}, p.errorf("want ',' or ')' in the list of %q", k)
		}
	}
	slices.Sort(vals)
	return Term{Key: k, Op: op, Values: slices.Compact(vals)}, nil
}
