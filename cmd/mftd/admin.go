package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// Passwords follow NIST SP 800-63B: length, not composition rules.
const (
	minPasswordLen = 12
	maxPasswordLen = 1024
)

func newUserCmd() *cobra.Command {
	user := &cobra.Command{Use: "user", Short: "manage accounts"}
	var fromStdin bool
	var email string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "create an account; prints its authenticator (TOTP) enrolment URI on the last line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !fromStdin {
				return errors.New("give the password on standard input with --password-stdin")
			}
			pw, err := readPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			return userAdd(cmd, args[0], pw, email)
		},
	}
	add.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	add.Flags().StringVar(&email, "email", "", "address for reset and emergency-access codes")
	user.AddCommand(add, newUserUnlockCmd(), newUserResetTOTPCmd(), newUserDisableCmd(true), newUserDisableCmd(false), newUserSetEmailCmd(), newUserAddKeyCmd(), newUserRemoveKeyCmd())
	return user
}

func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPasswordLen+2)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	switch n := utf8.RuneCountInString(pw); {
	case !utf8.ValidString(pw):
		return "", errors.New("the password is not valid UTF-8")
	case n < minPasswordLen:
		return "", fmt.Errorf("the password must have at least %d characters", minPasswordLen)
	case len(pw) > maxPasswordLen:
		return "", fmt.Errorf("the password must have at most %d bytes", maxPasswordLen)
	}
	return pw, nil
}

func userAdd(cmd *cobra.Command, rawName, password, email string) error {
	name, err := policy.CanonicalUsername(rawName)
	if err != nil {
		return err
	}
	if err := policy.CheckPassword(password, name); err != nil {
		return err
	}
	if err := checkEmail(email); err != nil {
		return err
	}
	ctx := cmd.Context()
	cfg, db, err := openAdminDB(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	hash, err := policy.HashPassword(password)
	if err != nil {
		return err
	}
	secret, uri, err := policy.NewTOTP(cfg.Auth.TOTPIssuer, name)
	if err != nil {
		return err
	}
	if _, err := db.CreateAccount(ctx, state.Account{Name: name, PasswordHash: hash, TOTPSecret: secret, Email: email, CreatedAt: time.Now().UTC()}); err != nil {
		if errors.Is(err, state.ErrExist) {
			return fmt.Errorf("user %q already exists", name)
		}
		return err
	}
	if _, err := db.Audit(ctx, state.AuditRecord{Actor: cliActor(), Action: "user.add", Object: name, Result: "ok"}); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "created user %s\n", name)
	fmt.Fprintln(out, "add this to an authenticator app (it is shown once):")
	fmt.Fprintln(out, uri)
	return nil
}

// openAdminDB loads the configuration and opens its state database for an
// admin command (quietly: the command reports what it did itself).
func openAdminDB(cmd *cobra.Command) (*config.Config, *state.DB, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, nil, err
	}
	db, err := openDB(cmd.Context(), cfg, zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	return cfg, db, nil
}

func newAuditCmd() *cobra.Command {
	audit := &cobra.Command{Use: "audit", Short: "inspect the audit log"}
	audit.AddCommand(&cobra.Command{
		Use:   "verify",
		Short: "check the audit chain; exits non-zero if a record was edited, removed or reordered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, db, err := openAdminDB(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			n, err := db.VerifyAudit(cmd.Context())
			if err != nil {
				return err
			}
			seq, head, err := db.AuditHead(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit chain verified: %d records; head record %d has hash %s\n", n, seq, head)
			return nil
		},
	})
	return audit
}

func newConfigCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "configuration"}
	c.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "load and validate the configuration; exits non-zero naming every bad key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			for _, w := range warnings(cfg) {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "configuration is valid")
			return nil
		},
	})
	return c
}

// warnings are valid settings an operator should know about.
func warnings(cfg *config.Config) []string {
	var w []string
	if cfg.Scanner.Clamd.Address == "" {
		w = append(w, "no malware scanner (scanner.clamd.address) is configured: only the built-in checks (EICAR test string, size, content types, archive limits) run before files reach Arrivals")
	}
	if cfg.Notify.Dir == "" && cfg.Notify.SMTP.Addr == "" {
		w = append(w, "no notifier (notify.dir or notify.smtp) is configured: password reset and emergency access are unavailable")
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Egress.Shares)) {
		if len(cfg.Egress.Shares[name].Checks) == 0 {
			w = append(w, fmt.Sprintf("egress.shares.%s.checks is empty: files of share %s leave without a malware or identifiable-data check", name, name))
		}
	}
	if m := cfg.MaxFileSize(); m < cfg.Limits.MaxFileSize.Int64() {
		w = append(w, fmt.Sprintf("files over %s are refused: storage.s3.part_size %s × %d parts (S3's limit) is less than limits.max_file_size %s; raise part_size for larger files",
			config.Size(m), cfg.Storage.S3.PartSize, config.S3MaxParts, cfg.Limits.MaxFileSize))
	}
	return w
}
