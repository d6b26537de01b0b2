package policy

import (
	"errors"
	"fmt"
)

// ErrBadName is wrapped by CheckShareName and CheckProjectName refusals.
var ErrBadName = errors.New("policy: invalid name")

// maxGroupName bounds project and share names.
const maxGroupName = 63

// CheckShareName reports whether name may name a share: 1 to 63 characters,
// lower-case ASCII letters, digits, '-' and '_', starting with a letter or a
// digit. Share names become storage key segments and SFTP folder names, so
// they are kept plain: no case folding, no Unicode look-alikes, nothing a
// path or a shell could read twice.
func CheckShareName(name string) error { return checkGroupName("share", name) }

// CheckProjectName is CheckShareName's rule for project names.
func CheckProjectName(name string) error { return checkGroupName("project", name) }

func checkGroupName(what, name string) error {
	if name == "" || len(name) > maxGroupName {
		return fmt.Errorf("%w: a %s name has 1 to %d characters", ErrBadName, what, maxGroupName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || (i > 0 && (c == '-' || c == '_'))
		if !ok {
			return fmt.Errorf("%w: a %s name is lower-case letters, digits, '-' and '_', starting with a letter or digit", ErrBadName, what)
		}
	}
	return nil
}
