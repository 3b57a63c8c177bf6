package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/segments/audience"
)

// ContainsLoad measures GET /v1/audiences/{id}/contains over loopback HTTP
// against an audience of about n/8 members among n profiles, behind the
// same auth middleware as production (one token, scope audiences:read),
// with workers concurrent keep-alive clients issuing requests in total.
// Traffic goes to 127.0.0.1 only, and the run is bounded by requests.
func ContainsLoad(ctx context.Context, dir string, n, workers, requests int) (Result, error) {
	addr, stop, err := audienceServer(ctx, dir, n)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	base := "http://" + addr + "/v1/audiences/vip/contains?profile_id="

	tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	var firstErr error
	var errMu sync.Mutex
	per := requests / workers
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			lat[w] = make([]time.Duration, 0, per)
			buf := make([]byte, 0, 128)
			for i := 0; i < per && ctx.Err() == nil; i++ {
				buf = strconv.AppendUint(append(buf[:0], base...), uint64(r.IntN(n)), 10)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, string(buf), nil)
				req.Header.Set("Authorization", "Bearer "+benchToken)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return Result{}, firstErr
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	return Result{Name: fmt.Sprintf("AudienceContainsHTTP/profiles=%d/clients=%d", n, workers), Events: int64(len(all)),
		Seconds: el.Seconds(), EventsPerSec: float64(len(all)) / el.Seconds(), NsPerEvent: float64(el.Nanoseconds()) / float64(len(all)),
		Reported: true, Extra: map[string]float64{"p50-ms": q(0.50), "p99-ms": q(0.99), "max-ms": q(1)}}, nil
}

const benchToken = "bench-token"

// audienceServer serves the audience API on 127.0.0.1 over a store whose
// audience "vip" holds about n/8 of n profiles, behind auth (one token,
// scope audiences:read). stop shuts it down and removes its store.
func audienceServer(ctx context.Context, dir string, n int) (addr string, stop func(), err error) {
	tmp, err := os.MkdirTemp(dir, "audience-server-")
	if err != nil {
		return "", nil, err
	}
	var cleanup []func()
	stop = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	cleanup = append(cleanup, func() { os.RemoveAll(tmp) })
	db, err := engine.OpenStore(tmp, engine.StoreConfig{}, nil)
	if err != nil {
		stop()
		return "", nil, err
	}
	cleanup = append(cleanup, func() { db.Close() })
	store, err := audience.BenchContainsStore(db, n)
	if err != nil {
		stop()
		return "", nil, err
	}
	cleanup = append(cleanup, func() { store.Close() })
	auth, err := engine.NewAuth(engine.AuthConfig{
		Tokens:    []engine.TokenConfig{{ID: "bench", Hash: engine.HashToken(benchToken), Scopes: []string{engine.ScopeAudiencesRead}}},
		RateLimit: engine.RateLimitConfig{PerSecond: 1e9, Burst: 1e9},
	})
	if err != nil {
		stop()
		return "", nil, err
	}
	srv, err := engine.NewServer(engine.ServerConfig{Addr: "127.0.0.1:0"}, prometheus.NewRegistry(), nil)
	if err != nil {
		stop()
		return "", nil, err
	}
	audience.Mount(srv, store.Routes(nil), auth)
	if err := srv.Listen(); err != nil {
		stop()
		return "", nil, err
	}
	if host, _, _ := net.SplitHostPort(srv.Addr()); host != "127.0.0.1" {
		stop()
		return "", nil, fmt.Errorf("load target %s is not loopback", srv.Addr())
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Serve(sctx); close(done) }()
	cleanup = append(cleanup, func() { cancel(); <-done })
	return srv.Addr(), stop, nil
}

// MemberExport streams every member of the audience "vip" (about n/8 of n
// profiles) over loopback HTTP as NDJSON pages of pageSize, following the
// cursor, and reports members per second.
func MemberExport(ctx context.Context, dir string, n, pageSize int) (Result, error) {
	addr, stop, err := audienceServer(ctx, dir, n)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	client := &http.Client{Timeout: time.Minute}
	cursor, members, bytesRead := "", int64(0), int64(0)
	start := time.Now()
	for {
		url := "http://" + addr + "/v1/audiences/vip/members?limit=" + strconv.Itoa(pageSize) + "&cursor=" + cursor
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+benchToken)
		resp, err := client.Do(req)
		if err != nil {
			return Result{}, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return Result{}, fmt.Errorf("members page: status %d: %v", resp.StatusCode, err)
		}
		bytesRead += int64(len(body))
		lines := bytes.Split(bytes.TrimSpace(body), []byte("\n"))
		last := lines[len(lines)-1]
		members += int64(len(lines) - 1)
		var page struct {
			Cursor string `json:"cursor"`
			More   bool   `json:"more"`
		}
		if err := json.Unmarshal(last, &page); err != nil {
			return Result{}, fmt.Errorf("members page ends with %q: %w", last, err)
		}
		if !page.More {
			break
		}
		cursor = page.Cursor
	}
	el := time.Since(start)
	return Result{Name: fmt.Sprintf("AudienceMemberExportHTTP/profiles=%d", n), Events: members, Bytes: bytesRead, Seconds: el.Seconds(),
		EventsPerSec: float64(members) / el.Seconds(), NsPerEvent: float64(el.Nanoseconds()) / float64(members), MBPerSec: float64(bytesRead) / 1e6 / el.Seconds(),
		Reported: true, Extra: map[string]float64{"members": float64(members)}}, nil
}
