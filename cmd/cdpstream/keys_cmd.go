package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/cdpstream/cdpstream/engine"
)

const keysUsage = `Usage:
  cdpstream keys rotate -config FILE [-new-key-env NAME]
        re-wrap every data key of data_dir's store from the master key the config names to the
        one in the environment variable NAME (default CDPSTREAM_NEW_MASTER_KEY; 32 bytes as 64
        hex digits or base64). The data itself is not rewritten, and the keys wrapped under the
        old master key are compacted out of the store's files. Stop cdpstream first (the store
        is locked while it runs). An interrupted rotation leaves a store cdpstream refuses to
        open: run the same command again to finish it (keep the new key until then: an
        interrupted rotation can only be finished). Every key is checked to open under the
        current master key before anything is written. Then give cdpstream the new key
        (encryption.master_key or master_key_env). Backups made before stay under the old key.
`

// cmdKeys manages the master key of a stopped instance's store.
func cmdKeys(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		fmt.Fprint(stderr, keysUsage)
		switch {
		case len(args) > 0 && isHelp(args[0]):
			return flag.ErrHelp
		case len(args) == 0:
			return usageError{errors.New("missing subcommand")}
		}
		return usageError{fmt.Errorf("unknown subcommand %q", args[0])}
	}
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "cdpstream.yaml", "configuration file: its data_dir holds the store, its encryption block the current master key")
	newEnv := fs.String("new-key-env", "CDPSTREAM_NEW_MASTER_KEY", "environment variable holding the new master key (never a flag: flags show in ps)")
	if pos, err := parseInterspersed(fs, args[1:]); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{fmt.Errorf("keys rotate takes no arguments, got %q", pos)}
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return usageError{err}
	}
	to := engine.EncryptionConfig{MasterKeyEnv: *newEnv}
	if err := to.Validate(); err != nil {
		return usageError{fmt.Errorf("-new-key-env: %w", err)}
	}
	db, err := openStoppedStore(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := engine.RotateMasterKey(db, cfg.Encryption, to, engine.RotateOptions{AfterChunk: func(n int) error {
		if n%(64*4096) == 0 {
			fmt.Fprintf(stderr, "re-wrapped %d data keys...\n", n)
		}
		return nil
	}})
	if err != nil {
		return err
	}
	switch {
	case !st.Switched:
		fmt.Fprintln(stdout, "the store's keys are already under the new master key; nothing to re-wrap")
	case st.Resumed:
		fmt.Fprintf(stdout, "finished an interrupted rotation: re-wrapped the remaining %d data keys under the new master key\n", st.Rotated)
	default:
		fmt.Fprintf(stdout, "re-wrapped %d data keys under the new master key\n", st.Rotated)
	}
	fmt.Fprintln(stdout, "start cdpstream with the new key (encryption.master_key or master_key_env); the old one no longer opens this store")
	return nil
}
