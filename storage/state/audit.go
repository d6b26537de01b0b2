package state

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// auditDomain separates this encoding from any other SHA-256 input and
// versions it.
const auditDomain = "mftd.audit.v1"

// auditHash returns the hex SHA-256 of r's canonical encoding: the domain
// string, then seq and time (unix nanoseconds, exactly as stored) as 8-byte
// big-endian integers, then actor, action, object, result, remote address
// and previous hash, each as an 8-byte big-endian length followed by its
// bytes. Every field has a fixed width or a length prefix, so no two
// different records encode alike and no field can bleed into its neighbour.
func auditHash(r AuditRecord) string {
	h := sha256.New()
	writeString(h, auditDomain)
	writeInt(h, r.Seq)
	writeInt(h, r.Time.UnixNano())
	for _, s := range []string{r.Actor, r.Action, r.Object, r.Result, r.RemoteAddr, r.PrevHash} {
		writeString(h, s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

func writeString(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}
