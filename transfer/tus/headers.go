package tus

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// parseUint parses a tus header number: 1 to 19 ASCII digits, no sign, no
// spaces, at most math.MaxInt64.
func parseUint(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if len(s) > 19 {
		return 0, errors.New("too many digits")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a non-negative decimal integer")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("out of range")
	}
	return n, nil
}

// parseMetadata decodes an Upload-Metadata header: comma-separated pairs of
// a key and an optional space-separated base64 value. Keys are non-empty,
// printable ASCII without spaces or commas, and unique.
func parseMetadata(s string) (map[string][]byte, error) {
	md := map[string][]byte{}
	if strings.TrimSpace(s) == "" {
		return md, nil
	}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.Trim(pair, " \t")
		key, val, hasVal := strings.Cut(pair, " ")
		if key == "" {
			return nil, errors.New("empty key")
		}
		for i := 0; i < len(key); i++ {
			if c := key[i]; c <= ' ' || c >= 0x7f {
				return nil, errors.New("key has a character outside printable ASCII")
			}
		}
		if _, dup := md[key]; dup {
			return nil, errors.New("duplicate key")
		}
		var v []byte
		if hasVal {
			val = strings.Trim(val, " \t")
			var err error
			v, err = base64.StdEncoding.Strict().DecodeString(val)
			if err != nil {
				return nil, errors.New("value is not valid base64")
			}
		}
		md[key] = v
	}
	return md, nil
}

// checksumAlgorithms are the Upload-Checksum algorithms the server supports,
// in the order advertised by Tus-Checksum-Algorithm.
var checksumAlgorithms = []string{"sha1", "sha256", "md5"}

func newChecksum(alg string) hash.Hash {
	switch alg {
	case "sha1":
		return sha1.New()
	case "sha256":
		return sha256.New()
	case "md5":
		return md5.New()
	}
	return nil
}

// errUnsupportedChecksum marks an algorithm the server does not offer.
var errUnsupportedChecksum = errors.New("unsupported checksum algorithm")

// parseChecksum decodes an Upload-Checksum header, "<algorithm> <base64>".
func parseChecksum(s string) (hash.Hash, []byte, error) {
	alg, enc, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok {
		return nil, nil, errors.New(`expected "<algorithm> <base64 digest>"`)
	}
	h := newChecksum(alg)
	if h == nil {
		return nil, nil, errUnsupportedChecksum
	}
	sum, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return nil, nil, errors.New("digest is not valid base64")
	}
	if len(sum) != h.Size() {
		return nil, nil, fmt.Errorf("a %s digest has %d bytes, got %d", alg, h.Size(), len(sum))
	}
	return h, sum, nil
}

// isHexSHA256 reports whether s is 64 hex digits.
func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
