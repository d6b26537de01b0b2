package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"net/netip"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
)

// withAccount runs fn on the named account for an admin command and
// audits what it did as the operator.
func withAccount(cmd *cobra.Command, rawName, action string, fn func(ctx context.Context, db *state.DB, acct state.Account) (string, error)) error {
	name, err := policy.CanonicalUsername(rawName)
	if err != nil {
		return err
	}
	_, db, err := openAdminDB(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := cmd.Context()
	acct, err := db.AccountByName(ctx, name)
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("no user %q", name)
	}
	if err != nil {
		return err
	}
	result, err := fn(ctx, db, acct)
	if err != nil {
		return err
	}
	_, err = db.Audit(ctx, state.AuditRecord{Actor: cliActor(), Action: action, Object: name, Result: result})
	return err
}

func newUserUnlockCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unlock NAME",
		Short: "end an account's sign-in lockout and forget its failed attempts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccount(cmd, args[0], "user.unlock", func(ctx context.Context, db *state.DB, a state.Account) (string, error) {
				if err := db.ClearFailures(ctx, state.FailAccount, a.Name); err != nil {
					return "", err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "unlocked %s\n", a.Name)
				return "ok", nil
			})
		},
	}
}

func newUserResetTOTPCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reset-totp NAME",
		Short: "give an account a new authenticator secret (the old one stops working); prints the enrolment URI last",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return withAccount(cmd, args[0], "user.reset-totp", func(ctx context.Context, db *state.DB, a state.Account) (string, error) {
				secret, uri, err := policy.NewTOTP(cfg.Auth.TOTPIssuer, a.Name)
				if err != nil {
					return "", err
				}
				if err := db.SetTOTPSecret(ctx, a.ID, secret); err != nil {
					return "", err
				}
				n, err := db.EndSessions(ctx, a.ID, "")
				if err != nil {
					return "", err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "new authenticator secret for %s; %d sessions ended\n", a.Name, n)
				fmt.Fprintln(out, "add this to an authenticator app (it is shown once):")
				fmt.Fprintln(out, uri)
				return fmt.Sprintf("ok; %d sessions ended", n), nil
			})
		},
	}
}

func newUserDisableCmd(disable bool) *cobra.Command {
	use, short, action := "enable NAME", "let a disabled account sign in again", "user.enable"
	if disable {
		use, short, action = "disable NAME", "stop an account signing in and end all its sessions at once", "user.disable"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccount(cmd, args[0], action, func(ctx context.Context, db *state.DB, a state.Account) (string, error) {
				if err := db.SetDisabled(ctx, a.ID, disable); err != nil {
					return "", err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", action, a.Name)
				return "ok", nil
			})
		},
	}
}

func newUserSetEmailCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "set-email NAME ADDRESS",
		Short: "set the address reset and emergency-access codes go to (\"\" removes it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkEmail(args[1]); err != nil {
				return err
			}
			return withAccount(cmd, args[0], "user.set-email", func(ctx context.Context, db *state.DB, a state.Account) (string, error) {
				return "ok", db.SetEmail(ctx, a.ID, args[1])
			})
		},
	}
}

// checkEmail accepts "" or one plain address (no display name).
func checkEmail(s string) error {
	if s == "" {
		return nil
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return fmt.Errorf("%q is not a plain email address", s)
	}
	return nil
}

func newAddressCmd() *cobra.Command {
	addr := &cobra.Command{Use: "address", Short: "manage sign-in limits of source addresses"}
	addr.AddCommand(&cobra.Command{
		Use:   "unlock IP",
		Short: "end a source address's sign-in lockout and forget its failed attempts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("%q is not an IP address", args[0])
			}
			_, db, err := openAdminDB(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			if err := db.ClearFailures(ctx, state.FailAddress, ip.String()); err != nil {
				return err
			}
			if _, err := db.Audit(ctx, state.AuditRecord{Actor: cliActor(), Action: "address.unlock", Object: ip.String(), Result: "ok"}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "unlocked %s\n", ip)
			return nil
		},
	})
	return addr
}

func newUserAddKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "add-key NAME < key.pub",
		Short: "register an SSH public key (one authorized_keys line on stdin) for SFTP logins; the code is still asked",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			line, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
			if err != nil {
				return err
			}
			pub, comment, err := authn.ParseSSHKey(line)
			if err != nil {
				return err
			}
			fp := ssh.FingerprintSHA256(pub)
			err = withAccount(cmd, args[0], "user.add-key", func(ctx context.Context, db *state.DB, a state.Account) (string, error) {
				err := db.AddSSHKey(ctx, state.SSHKey{Fingerprint: fp, AccountID: a.ID, Wire: pub.Marshal(), Comment: comment})
				if errors.Is(err, state.ErrExist) {
					return "", fmt.Errorf("key %s is registered already", fp)
				}
				return "ok " + fp, err
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), fp)
			return nil
		},
	}
}

func newUserRemoveKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove-key NAME FINGERPRINT",
		Short: "unregister an SSH public key (by its SHA256:... fingerprint)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccount(cmd, args[0], "user.remove-key", func(ctx context.Context, db *state.DB, a state.Account) (string, error) {
				if err := db.RemoveSSHKey(ctx, a.ID, args[1]); errors.Is(err, state.ErrNotFound) {
					return "", fmt.Errorf("no key %s for %s", args[1], a.Name)
				} else if err != nil {
					return "", err
				}
				return "ok " + args[1], nil
			})
		},
	}
}
