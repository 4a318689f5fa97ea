package cli

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version, Commit and Date describe the build. Release builds set them:
//
//	go build -ldflags "-X github.com/eventsync/eventsync/internal/cli.Version=v1.2.3 \
//	  -X github.com/eventsync/eventsync/internal/cli.Commit=$(git rev-parse HEAD) \
//	  -X github.com/eventsync/eventsync/internal/cli.Date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// Unset, Commit and Date fall back to the VCS stamp the go command records
// (the commit and its time), and Version to the module version of a
// "go install …@version".
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
)

// buildInfo is what "eventsync version" prints.
type buildInfo struct {
	Version, Commit, Date string
	dateIsCommit          bool // Date is the commit's time, not the build's
	modified              bool // built from a work tree with changes
}

func currentBuild() buildInfo {
	b := buildInfo{Version: Version, Commit: Commit, Date: Date}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	fromVCS := b.Commit == ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if fromVCS {
				b.Commit = s.Value
			}
		case "vcs.modified":
			b.modified = fromVCS && s.Value == "true"
		case "vcs.time":
			if b.Date == "" {
				b.Date, b.dateIsCommit = s.Value, true
			}
		}
	}
	return b
}

func (b buildInfo) String() string {
	commit := b.Commit
	if commit == "" {
		commit = "unknown"
	}
	if b.modified {
		commit += " with local changes"
	}
	date := "build date unknown"
	switch {
	case b.dateIsCommit:
		date = "committed " + b.Date
	case b.Date != "":
		date = "built " + b.Date
	}
	return fmt.Sprintf("%s (commit %s, %s)", b.Version, commit, date)
}

func newVersionCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version, commit and build date",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(env.Stdout, "eventsync", currentBuild())
			return nil
		},
	}
}
