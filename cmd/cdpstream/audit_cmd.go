package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/privacy"
)

const auditUsage = `Usage:
  cdpstream audit verify -config FILE    walk the hash-chained audit trail; exit 1 on any altered, removed or reordered entry
  cdpstream audit list   -config FILE [-from N] [-to N]   print entries (targets are keyed hashes)
The store must not be open in a running cdpstream (stop it, or point -config at a copy of data_dir).
`

func cmdAudit(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return usageError{errors.New("missing subcommand")}
	}
	if isHelp(args[0]) {
		fmt.Fprint(stderr, auditUsage)
		return flag.ErrHelp
	}
	sub := args[0]
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "cdpstream.yaml", "configuration file: its data_dir holds the trail")
	from := fs.Uint64("from", 1, "list: first entry")
	to := fs.Uint64("to", 0, "list: last entry (0: the end)")
	if _, err := parseInterspersed(fs, args[1:]); err != nil {
		return err
	}
	if sub != "verify" && sub != "list" {
		fmt.Fprint(stderr, auditUsage)
		return usageError{fmt.Errorf("unknown subcommand %q", sub)}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return usageError{err}
	}
	db, err := openStoppedStore(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if sub == "list" {
		es, err := privacy.Entries(db, *from, *to)
		if err != nil {
			return err
		}
		for _, e := range es {
			fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\t%s\t%s\t%x\n", e.Seq, e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Actor, e.Action, e.Target, e.Outcome, e.Hash[:8])
		}
		return nil
	}
	if err := privacy.Verify(db); err != nil {
		return err
	}
	entries, err := privacy.Entries(db, 0, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "audit trail intact: %d entries\n", len(entries))
	return nil
}

// openStoppedStore opens the store of cfg's data_dir for a command that
// needs it to itself (audit, keys): a running instance holds its lock.
func openStoppedStore(cfg *Config) (*pebble.DB, error) {
	db, err := engine.OpenStore(stateDir(cfg.DataDir), cfg.State, nil)
	if err != nil && strings.Contains(err.Error(), "lock") {
		return nil, fmt.Errorf("%w (is cdpstream running on this data_dir? stop it first, or use a copy)", err)
	}
	return db, err
}
