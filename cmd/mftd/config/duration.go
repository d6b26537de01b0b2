package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ParseDuration parses a non-negative Go duration ("720h", "90s", "1h30m").
// A bare number is refused, except 0: "30" could mean seconds or minutes.
// Go durations have no day unit; 30 days is "720h".
func ParseDuration(s string) (Duration, error) {
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return 0, errors.New("empty duration; write one such as 90s, 1h30m or 720h")
	case t == "0":
		return 0, nil
	case strings.HasPrefix(t, "-"):
		return 0, fmt.Errorf("duration %s is negative", short(t))
	}
	if validDecimal(t) {
		return 0, fmt.Errorf("duration %s has no unit; write e.g. %ss or %sh", short(t), t, t)
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		if strings.HasSuffix(t, "d") {
			return 0, fmt.Errorf("duration %s: there is no day unit; write hours, e.g. 720h for 30 days", short(t))
		}
		return 0, fmt.Errorf("duration %s is not a Go duration such as 90s, 1h30m or 720h", short(t))
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %s is negative", short(t))
	}
	return Duration(d), nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String writes d as Go does, without zero minutes and seconds at the end
// ("720h", "1h30m", "90s" is "1m30s"); ParseDuration reads it back.
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// UnmarshalYAML accepts a Go duration string, or 0; see ParseDuration.
// Errors are *yaml.TypeError, so decoding goes on and reports every bad key.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "expected a duration such as 90s or 720h, got "+describeNode(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return nodeError(n, err.Error())
	}
	*d = v
	return nil
}

// MarshalYAML writes d as String does.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }
