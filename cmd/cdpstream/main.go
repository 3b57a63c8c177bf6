// Command cdpstream runs the cdpstream pipeline: `demo` on an embedded
// Kafka broker, `run` against real brokers or files, `bench` for the
// benchmark harness; `profile`, `audience`, `consent` and `privacy` talk
// to a running instance's HTTP API; `audit` and `keys` work on a stopped
// instance's store; `version`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `cdpstream: streaming identity resolution and consent filtering.

Usage:
  cdpstream demo    [flags]          run everything on an embedded Kafka broker with generated traffic
  cdpstream run     -config FILE     run the pipeline against real brokers or an NDJSON file
  cdpstream bench   [flags]          run the end-to-end benchmarks
  cdpstream profile lookup|remove-identifier|split [flags]
                                     look up, correct or un-merge profiles over the HTTP API
  cdpstream audience list|create|size|members|query [flags]
                                     define and query audiences over the HTTP API
  cdpstream consent show|set|explain [flags]
                                     read, record and explain consent over the HTTP API
  cdpstream privacy submit|status|list|cancel [flags]
                                     data subject requests over the HTTP API
  cdpstream audit verify|list -config FILE
                                     check the hash-chained audit trail
  cdpstream keys rotate -config FILE [-new-key-env NAME]
                                     re-wrap the store's data keys under a new master key (stopped instance)
  cdpstream version                  print the version

Run 'cdpstream <command> -h' for the flags of a command, or its subcommands.
`

func main() {
	os.Exit(cli(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// cli runs one command and returns the process exit code: 0 success,
// 1 failure while running, 2 bad usage or configuration.
func cli(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "run":
		err = cmdRun(ctx, args[1:], stdin, stdout, stderr)
	case "bench":
		err = cmdBench(ctx, args[1:], stdout, stderr)
	case "profile":
		err = cmdProfile(ctx, args[1:], stdout, stderr)
	case "audience":
		err = cmdAudience(ctx, args[1:], stdin, stdout, stderr)
	case "privacy":
		err = cmdPrivacy(ctx, args[1:], stdout, stderr)
	case "audit":
		err = cmdAudit(ctx, args[1:], stdout, stderr)
	case "consent":
		err = cmdConsent(ctx, args[1:], stdout, stderr)
	case "keys":
		err = cmdKeys(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "cdpstream: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "cdpstream %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "cdpstream %s: %v\n", args[0], err)
		return 1
	}
}

// usageError marks errors in flags or configuration (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func versionString() string {
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("cdpstream %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "cdpstream.yaml", "configuration file (see cdpstream.example.yaml)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return usageError{err}
	}
	log := newLogger(cfg, stderr)
	a, err := build(cfg, log, stdin)
	if err != nil {
		return usageError{err}
	}
	runErr := a.run(ctx)
	if err := a.close(); err != nil && runErr == nil {
		runErr = err
	}
	st := a.runner.Stats()
	log.Info("pipeline stopped", "received", st.Received, "valid", st.Valid, "dead_lettered", st.Dead, "batches_committed", st.Committed)
	return runErr
}
