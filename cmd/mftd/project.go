package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/shares"
)

// newProjectCmd is the system administrator's side of projects: creating
// them, choosing their owner (IAO) and, with the IAO, their administrators
// (IAAs). Shares and members are the IAO's and IAAs' business, over the API.
func newProjectCmd() *cobra.Command {
	project := &cobra.Command{Use: "project", Short: "manage projects, their owner (IAO) and administrators (IAAs)"}
	var owner string
	create := &cobra.Command{
		Use:   "create PROJECT --owner USER",
		Short: "create a project with USER as its owner (IAO), who then creates shares over the API",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if owner == "" {
				return errors.New("give the project's owner with --owner USER")
			}
			return withSharesService(cmd, func(ctx context.Context, svc *shares.Service, a shares.Actor) error {
				if err := svc.CreateProject(ctx, a, args[0], owner); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created project %s, owner %s\n", args[0], canonicalArg(owner))
				return nil
			})
		},
	}
	create.Flags().StringVar(&owner, "owner", "", "the project's owner (IAO): an existing user")
	project.AddCommand(create,
		projectUserCmd("add-admin PROJECT USER", "make USER an administrator (IAA) of the project", "%s is an administrator of %s\n",
			(*shares.Service).PutProjectAdmin),
		projectUserCmd("remove-admin PROJECT USER", "remove USER from the project's administrators (IAAs)", "%s is no longer an administrator of %s\n",
			(*shares.Service).DeleteProjectAdmin),
		projectUserCmd("set-owner PROJECT USER", "make USER the project's owner (IAO) in place of the present one", "%s is the owner of %s\n",
			(*shares.Service).SetProjectOwner),
		newProjectListCmd())
	return project
}

// projectUserCmd is a command that applies op to a project and a user.
func projectUserCmd(use, short, done string, op func(*shares.Service, context.Context, shares.Actor, string, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withSharesService(cmd, func(ctx context.Context, svc *shares.Service, a shares.Actor) error {
				if err := op(svc, ctx, a, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), done, canonicalArg(args[1]), args[0])
				return nil
			})
		},
	}
}

func newProjectListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "list projects with their owner, administrators and shares",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withSharesService(cmd, func(ctx context.Context, svc *shares.Service, a shares.Actor) error {
				projects, err := svc.Projects(ctx, a)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "PROJECT\tOWNER\tADMINISTRATORS\tSHARES")
				for _, p := range projects {
					names, err := svc.ProjectShares(ctx, a, p.Name)
					if err != nil {
						return err
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Name, p.Owner, dashIfEmpty(strings.Join(p.Admins, ",")), dashIfEmpty(strings.Join(names, ",")))
				}
				return w.Flush()
			})
		},
	}
}

// withSharesService runs fn with a shares service on the configured state
// database, acting as the system administrator running the command. The
// service itself writes the audit records.
func withSharesService(cmd *cobra.Command, fn func(ctx context.Context, svc *shares.Service, a shares.Actor) error) error {
	cfg, db, err := openAdminDB(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := shares.New(shares.Config{}, zap.NewNop(), db, nil, policy.NewLive(settingsFrom(cfg)))
	if err != nil {
		return err
	}
	return projectErr(fn(cmd.Context(), svc, shares.Actor{User: cliActor(), Admin: true}))
}

// projectErr says what went wrong in the administrator's words.
func projectErr(err error) error {
	var nf *shares.NotFoundError
	var ex *shares.ExistError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &nf):
		return fmt.Errorf("no such %s", nf.What)
	case errors.As(err, &ex):
		return fmt.Errorf("%s already exists", ex.What)
	case errors.Is(err, state.ErrNotFound):
		return errors.New("not found")
	}
	return err
}

// canonicalArg is how a user name given on the command line is stored.
func canonicalArg(name string) string {
	if c, err := policy.CanonicalUsername(name); err == nil {
		return c
	}
	return name
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
