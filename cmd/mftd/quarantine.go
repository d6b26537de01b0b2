package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/ingest"
)

func newQuarantineCmd() *cobra.Command {
	q := &cobra.Command{
		Use:   "quarantine",
		Short: "review files the checks held back: list, release (publish anyway) or delete them",
	}
	q.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "list quarantined uploads, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ing, done, err := openAdminIngest(cmd)
			if err != nil {
				return err
			}
			defer done()
			us, err := ing.Quarantined(cmd.Context(), 100000)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tOWNER\tNAME\tBYTES\tSHA256\tQUARANTINED\tREASON")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%q\t%d\t%s\t%s\t%s\n", u.ID, u.Owner, u.Filename, u.Length, u.SHA256,
					u.UpdatedAt.UTC().Format(time.RFC3339), u.Reason)
			}
			return tw.Flush()
		},
	})
	q.AddCommand(newQuarantineActionCmd("release", "publish a quarantined upload to its owner's Arrivals anyway (audited; needs --reason)"),
		newQuarantineActionCmd("delete", "delete a quarantined upload's bytes for good (audited; needs --reason)"))
	return q
}

func newQuarantineActionCmd(action, short string) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   action + " ID --reason TEXT",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ing, done, err := openAdminIngest(cmd)
			if err != nil {
				return err
			}
			defer done()
			id := args[0]
			out := cmd.OutOrStdout()
			switch action {
			case "release":
				u, err := ing.Release(cmd.Context(), id, cliActor(), reason)
				if err != nil {
					return quarantineError(id, err)
				}
				fmt.Fprintf(out, "released %s (sha256 %s): the running daemon publishes it to %s's Arrivals\n", u.ID, u.SHA256, u.Owner)
			case "delete":
				if err := ing.Delete(cmd.Context(), id, cliActor(), reason); err != nil {
					return quarantineError(id, err)
				}
				fmt.Fprintf(out, "deleted %s\n", id)
			}
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit log; required)")
	return c
}

func quarantineError(id string, err error) error {
	switch {
	case errors.Is(err, state.ErrNotFound):
		return fmt.Errorf("no upload %q", id)
	case errors.Is(err, ingest.ErrReasonRequired):
		return errors.New("give the reason with --reason (it is recorded in the audit log)")
	case errors.Is(err, ingest.ErrContentChanged):
		return fmt.Errorf("%s was not released: its bytes no longer have the SHA-256 they were checked with (refusal audited)", id)
	}
	return err
}

// openAdminIngest opens the state database and the storage of the
// configuration for a command that acts on uploads. done closes them.
func openAdminIngest(cmd *cobra.Command) (*ingest.Service, func(), error) {
	cfg, db, err := openAdminDB(cmd)
	if err != nil {
		return nil, nil, err
	}
	store, err := newStore(cmd.Context(), cfg.Storage, cfg.DataDir, zap.NewNop())
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	// No checks run here: the scanner is the daemon's.
	ing, err := newIngest(cfg, zap.NewNop(), db, store, nil, nil)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return ing, func() { db.Close() }, nil
}
