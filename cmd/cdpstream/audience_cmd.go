package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
)

const audienceUsage = `Usage:
  cdpstream audience list                          every audience with its size
  cdpstream audience create -f FILE|-              define an audience (JSON definition)
  cdpstream audience size ID                       number of members
  cdpstream audience members ID [-cursor C] [-limit N] [-as TYPE]   members as NDJSON, then the next cursor
  cdpstream audience query [-members] EXPRESSION   e.g. 'vip AND consent:advertising AND NOT churned'
Flags of every subcommand: -addr URL (env CDPSTREAM_ADDR), -token T (env CDPSTREAM_TOKEN).
`

// cmdAudience is the terminal face of the audience endpoints.
func cmdAudience(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd, err := newAPICommand("audience", audienceUsage, args, stderr)
	if err != nil {
		return err
	}
	sub, fs := cmd.sub, cmd.fs
	file := fs.String("f", "", "create: file with the JSON definition (- for standard input)")
	cursor := fs.String("cursor", "", "members: continue after this cursor")
	limit := fs.Int("limit", 0, "members: at most this many (0: the server's default)")
	withMembers := fs.Bool("members", false, "query: also list the members")
	as := fs.String("as", "", "members: also list each member's values of this identifier type (email, user_id, ...)")
	pos, c, err := cmd.parse(args[1:])
	if err != nil {
		return err
	}
	arg := func(what string) (string, error) {
		if len(pos) != 1 {
			return "", usageError{fmt.Errorf("%s needs %s (one argument, quoted if it has spaces)", sub, what)}
		}
		return pos[0], nil
	}
	switch sub {
	case "list":
		return c.do(ctx, http.MethodGet, "/v1/audiences", nil, stdout)
	case "create":
		var data []byte
		switch *file {
		case "":
			return usageError{errors.New("create needs -f FILE (or -f - for standard input)")}
		case "-":
			data, err = io.ReadAll(stdin)
		default:
			data, err = os.ReadFile(*file)
		}
		if err != nil {
			return fmt.Errorf("-f: %w", err)
		}
		if !json.Valid(data) {
			return usageError{fmt.Errorf("-f: %s is not JSON", *file)}
		}
		return c.do(ctx, http.MethodPost, "/v1/audiences", json.RawMessage(data), stdout)
	case "size":
		id, err := arg("an audience id")
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := c.do(ctx, http.MethodGet, "/v1/audiences/"+url.PathEscape(id), nil, &buf); err != nil {
			return err
		}
		var info struct {
			Size uint64 `json:"size"`
		}
		if err := json.Unmarshal(buf.Bytes(), &info); err != nil {
			return fmt.Errorf("unexpected answer: %w", err)
		}
		_, err = fmt.Fprintln(stdout, info.Size)
		return err
	case "members":
		id, err := arg("an audience id")
		if err != nil {
			return err
		}
		q := url.Values{}
		if *cursor != "" {
			q.Set("cursor", *cursor)
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		if *as != "" {
			q.Set("as", *as)
		}
		path := "/v1/audiences/" + url.PathEscape(id) + "/members"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		return c.do(ctx, http.MethodGet, path, nil, stdout)
	case "query":
		expr, err := arg("an expression")
		if err != nil {
			return err
		}
		return c.do(ctx, http.MethodPost, "/v1/query", map[string]any{"expression": expr, "members": *withMembers}, stdout)
	}
	return cmd.unknown()
}
