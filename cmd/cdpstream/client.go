package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// apiClient talks to a running cdpstream's HTTP API, for the commands that
// people who live in the terminal use instead of curl.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

// apiCommand is the frame every command talking to the HTTP API shares:
// the subcommand, its flag set with -addr and -token, the usage text.
type apiCommand struct {
	sub, usage  string
	stderr      io.Writer
	fs          *flag.FlagSet
	addr, token *string
}

// newAPICommand starts "cdpstream group sub ...": args[0] is the
// subcommand. The caller adds its own flags to fs, then calls parse.
func newAPICommand(group, usage string, args []string, stderr io.Writer) (*apiCommand, error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return nil, usageError{errors.New("missing subcommand")}
	}
	if isHelp(args[0]) {
		fmt.Fprint(stderr, usage)
		return nil, flag.ErrHelp
	}
	a := &apiCommand{sub: args[0], usage: usage, stderr: stderr, fs: flag.NewFlagSet(group+" "+args[0], flag.ContinueOnError)}
	a.fs.SetOutput(stderr)
	a.addr, a.token = clientFlags(a.fs)
	return a, nil
}

// isHelp reports whether a command group's first argument asks for its
// usage ("cdpstream privacy -h").
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// parse reads the flags (anywhere among the arguments) and returns the
// positional arguments and a client for -addr and -token.
func (a *apiCommand) parse(args []string) ([]string, *apiClient, error) {
	pos, err := parseInterspersed(a.fs, args)
	if err != nil {
		return nil, nil, err
	}
	c, err := newAPIClient(*a.addr, *a.token)
	return pos, c, err
}

// unknown reports a subcommand the group does not have.
func (a *apiCommand) unknown() error {
	fmt.Fprint(a.stderr, a.usage)
	return usageError{fmt.Errorf("unknown subcommand %q", a.sub)}
}

// clientFlags adds -addr and -token to fs.
func clientFlags(fs *flag.FlagSet) (addr, token *string) {
	defAddr := os.Getenv("CDPSTREAM_ADDR")
	if defAddr == "" {
		defAddr = "http://127.0.0.1:8080"
	}
	addr = fs.String("addr", defAddr, "base URL of the cdpstream HTTP API (env CDPSTREAM_ADDR)")
	token = fs.String("token", os.Getenv("CDPSTREAM_TOKEN"), "bearer token (env CDPSTREAM_TOKEN)")
	return addr, token
}

func newAPIClient(addr, token string) (*apiClient, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, usageError{fmt.Errorf("-addr: %q is not a URL", addr)}
	}
	return &apiClient{base: strings.TrimSuffix(u.String(), "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// do sends a request and copies the JSON answer to out. A non-2xx answer
// becomes an error carrying the server's message.
func (c *apiClient) do(ctx context.Context, method, path string, body any, out io.Writer) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		if msg := errorMessage(data); msg != "" {
			return fmt.Errorf("%s %s: %s (HTTP %d)", method, path, msg, resp.StatusCode)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	_, err = out.Write(data)
	return err
}

// errorMessage is the message of an error body: {"error": "..."}, or the
// OpenDSR shape {"error": {"message": "...", ...}}; "" for anything else.
func errorMessage(body []byte) string {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(e.Error, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(e.Error, &o) == nil {
		return o.Message
	}
	return ""
}

const profileUsage = `Usage:
  cdpstream profile lookup  -type TYPE -value VALUE | -id N   a profile: masked identifiers, merge history
  cdpstream profile remove-identifier -type TYPE -value VALUE remove one identifier from its profile
  cdpstream profile split   -id N                             undo the merges of a profile
Flags of every subcommand: -addr URL (env CDPSTREAM_ADDR), -token T (env CDPSTREAM_TOKEN).
`

// cmdProfile is the terminal face of the identity endpoints.
func cmdProfile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd, err := newAPICommand("profile", profileUsage, args, stderr)
	if err != nil {
		return err
	}
	sub, fs := cmd.sub, cmd.fs
	typ := fs.String("type", "", "identifier type (email, user_id, anonymous_id, phone, device_id, ...)")
	value := fs.String("value", "", "identifier value (as sent in events; normalised by the server)")
	id := fs.Uint("id", 0, "profile id")
	_, c, err := cmd.parse(args[1:])
	if err != nil {
		return err
	}
	byIdent := *typ != "" || *value != ""
	switch sub {
	case "lookup":
		switch {
		case byIdent && *id != 0:
			return usageError{errors.New("give -type and -value, or -id, not both")}
		case byIdent && (*typ == "" || *value == ""):
			return usageError{errors.New("-type and -value go together")}
		case byIdent:
			return c.do(ctx, http.MethodGet, "/v1/profiles/lookup?type="+url.QueryEscape(*typ)+"&value="+url.QueryEscape(*value), nil, stdout)
		case *id != 0:
			return c.do(ctx, http.MethodGet, "/v1/profiles/lookup?profile_id="+strconv.FormatUint(uint64(*id), 10), nil, stdout)
		}
		return usageError{errors.New("lookup needs -type and -value, or -id")}
	case "remove-identifier":
		if *typ == "" || *value == "" {
			return usageError{errors.New("remove-identifier needs -type and -value")}
		}
		return c.do(ctx, http.MethodPost, "/v1/profiles/remove-identifier", map[string]string{"type": *typ, "value": *value}, stdout)
	case "split":
		if *id == 0 {
			return usageError{errors.New("split needs -id")}
		}
		return c.do(ctx, http.MethodPost, "/v1/profiles/split", map[string]uint{"profile_id": *id}, stdout)
	}
	return cmd.unknown()
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments ("size vip -addr X" as well as "-addr X size vip"), which the
// flag package alone does not. It returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
