// Command mftd is the managed file transfer daemon and its admin commands.
//
//	mftd serve --config F               run the daemon
//	mftd user add NAME --config F --password-stdin
//	mftd audit verify --config F
//	mftd project create P --owner USER --config F
//	mftd config check --config F
//
// Admin commands run on the host against the same state database as the
// running daemon; none of them is reachable over the network.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mftd:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "mftd",
		Short:         "managed file transfer daemon for research data safe havens",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "/etc/mftd/mftd.yaml", "configuration file")
	root.AddCommand(newServeCmd(), newUserCmd(), newAddressCmd(), newAuditCmd(), newConfigCmd(), newQuarantineCmd())
	root.AddCommand(newProjectCmd())
	return root
}
