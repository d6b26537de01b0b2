package config

import (
	"errors"
	"fmt"
	"math/big"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Byte-size units: the binary ones are powers of 1024, the decimal ones
// powers of 1000.
const (
	B   Size = 1
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
	PiB Size = 1 << 50
	KB  Size = 1e3
	MB  Size = 1e6
	GB  Size = 1e9
	TB  Size = 1e12
)

// sizeUnits are the units ParseSize accepts, case-sensitively: "mb" or "M"
// are refused rather than guessed at.
var sizeUnits = map[string]Size{
	"B": B, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB, "PiB": PiB,
	"KB": KB, "MB": MB, "GB": GB, "TB": TB,
}

const sizeUnitList = "B, KiB, MiB, GiB, TiB, PiB, KB, MB, GB, TB"

// stringUnits are tried in order by Size.String: binary first, then decimal.
var stringUnits = []struct {
	name string
	size Size
}{
	{"PiB", PiB}, {"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"TB", TB}, {"GB", GB}, {"MB", MB}, {"KB", KB},
}

// maxSizeText bounds the text ParseSize looks at, so a stray megabyte of
// digits costs nothing.
const maxSizeText = 64

// ParseSize parses a byte count: a non-negative number with an optional
// unit, optionally separated by spaces ("1048576", "500MiB", "1 TiB",
// "1.5GiB"). A decimal fraction is accepted only if it comes to a whole
// number of bytes; the result must fit in an int64.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return 0, errors.New("empty size; write one such as 500MiB or 1048576")
	case len(t) > maxSizeText:
		return 0, fmt.Errorf("size %s is too long", short(t))
	case t[0] == '-':
		return 0, fmt.Errorf("size %s is negative", short(t))
	}
	i := 0
	for i < len(t) && (isDigit(t[i]) || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if !validDecimal(num) {
		return 0, fmt.Errorf("size %s is not a number with an optional unit (%s)", short(t), sizeUnitList)
	}
	mult := B
	if unit != "" {
		var ok bool
		if mult, ok = sizeUnits[unit]; !ok {
			return 0, fmt.Errorf("size %s has unknown unit %s (use one of %s)", short(t), short(unit), sizeUnitList)
		}
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok { // unreachable after validDecimal; kept so a bug cannot panic
		return 0, fmt.Errorf("size %s is not a number", short(t))
	}
	r.Mul(r, new(big.Rat).SetInt64(int64(mult)))
	if !r.IsInt() {
		return 0, fmt.Errorf("size %s is not a whole number of bytes", short(t))
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("size %s is too large (at most %d bytes)", short(t), int64(^uint64(0)>>1))
	}
	return Size(r.Num().Int64()), nil
}

// validDecimal reports whether s is digits, optionally followed by a dot and
// more digits.
func validDecimal(s string) bool {
	whole, frac, hasDot := strings.Cut(s, ".")
	return allDigits(whole) && (!hasDot || allDigits(frac))
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Int64 returns the number of bytes.
func (s Size) Int64() int64 { return int64(s) }

// String writes s with the largest unit that divides it exactly, binary
// units first ("1TiB", "64KiB", "1MB", "1500B"); ParseSize reads it back.
func (s Size) String() string {
	if s == 0 {
		return "0B"
	}
	for _, u := range stringUnits {
		if s%u.size == 0 {
			return fmt.Sprintf("%d%s", s/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(s))
}

// UnmarshalYAML accepts a YAML integer or a string with a unit; see ParseSize.
// Errors are *yaml.TypeError, so decoding goes on and reports every bad key.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "expected a size such as 500MiB or 1048576, got "+describeNode(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return nodeError(n, err.Error())
	}
	*s = v
	return nil
}

// MarshalYAML writes s as String does.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// nodeError reports a bad value at n's position, in the form Parse maps back
// to the key it belongs to. A *yaml.TypeError lets the decoder go on and
// collect problems with other keys.
func nodeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: column %d: %s", n.Line, n.Column, msg)}}
}

// describeNode names a node's kind for an error message.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return "a " + n.ShortTag() + " value"
	}
}

// short quotes s for an error message, cut to a readable length.
func short(s string) string {
	const max = 40
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
