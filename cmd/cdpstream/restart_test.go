package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/bench"
)

// TestMain lets a test start this test binary as the real cdpstream
// process: with CDPSTREAM_TEST_ARGS set it runs cli with those arguments
// and exits, so signals reach a separate process as they would in
// production.
func TestMain(m *testing.M) {
	if args := os.Getenv("CDPSTREAM_TEST_ARGS"); args != "" {
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(cli(argv, os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// startProcess runs `cdpstream args...` as a child process.
func startProcess(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	argv, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CDPSTREAM_TEST_ARGS="+string(argv))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// TestSignalStopAndRestart produces a live stream, stops cdpstream in the
// middle of it (SIGTERM: drain and exit 0; SIGKILL: a crash), restarts it
// and checks that every event reached the output exactly once, except for
// duplicates from the batches in flight at a crash.
func TestSignalStopAndRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) { testRestart(t, sig) })
	}
}

func testRestart(t *testing.T, sig syscall.Signal) {
	const (
		maxRows    = 300
		queueDepth = 2
	)
	brokers := startKafka(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cdpstream.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir: %s
log: {level: info}
source:
  kafka: {brokers: [%s], group: restart, topics: [%s], session_timeout: 6s}
batch: {max_rows: %d, max_age: 20ms}
runner: {queue_depth: %d}
sinks:
  - {name: out, consent: {}, kafka: {topic: %s, key: message_id}}
dead_letter:
  kafka: {topic: %s}
http: {addr: "127.0.0.1:0"}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
`, dir, brokers[0], topicIn, maxRows, queueDepth, topicOut, topicDLQ)), 0o600); err != nil {
		t.Fatal(err)
	}

	// A producer that keeps writing while the pipeline stops and starts.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topicIn), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := map[string]bool{}
	var sent atomic.Int64
	stopProducing := make(chan struct{})
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		g := bench.NewGenerator(bench.GenConfig{Seed: 3, People: 300})
		for {
			select {
			case <-stopProducing:
				return
			default:
			}
			for i := 0; i < 100; i++ {
				val, key, _ := g.Next(nil)
				var m struct {
					MessageID string `json:"messageId"`
				}
				_ = json.Unmarshal(val, &m)
				want[m.MessageID] = true
				cl.Produce(context.Background(), &kgo.Record{Key: []byte(key), Value: val}, nil)
				sent.Add(1)
			}
			time.Sleep(5 * time.Millisecond) // ~20k events/s
		}
	}()

	first, out1 := startProcess(t, "run", "-config", cfgPath)
	// Wait until the first process is well into the stream.
	waitFor(t, 60*time.Second, func() bool { c, _ := committedAll(t, brokers, "restart"); return c > 5000 }, out1)
	if err := first.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err = first.Wait()
	switch sig {
	case syscall.SIGTERM:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, want exit 0\n%s", err, out1)
		}
	case syscall.SIGKILL:
		if err == nil {
			t.Fatal("process survived SIGKILL")
		}
	}
	stoppedAt, _ := committedAll(t, brokers, "restart")

	second, out2 := startProcess(t, "run", "-config", cfgPath)
	defer func() { _ = second.Process.Kill(); _, _ = second.Process.Wait() }()
	time.Sleep(300 * time.Millisecond) // the stream goes on across the restart
	close(stopProducing)
	<-producerDone
	if err := cl.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { c, e := committedAll(t, brokers, "restart"); return c == e }, out2)
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second process: %v\n%s", err, out2)
	}
	if c, e := committedAll(t, brokers, "restart"); stoppedAt >= e || c != e {
		t.Fatalf("the stop was not mid-stream (stopped at %d of %d) or the restart did not finish (%d)", stoppedAt, e, c)
	}

	seen := map[string]int{}
	for _, r := range consumeAll(t, brokers, topicOut) {
		seen[messageID(t, r.Value)]++
	}
	dups := 0
	for id, n := range seen {
		if !want[id] {
			t.Errorf("unexpected message %q", id)
		}
		dups += n - 1
	}
	for id := range want {
		if seen[id] == 0 {
			t.Errorf("message %q lost across the restart", id)
		}
	}
	// A drain commits everything it wrote; a crash replays what was
	// written but not committed: at most the batches between the source
	// and the commit.
	maxDups := maxRows
	if sig == syscall.SIGKILL {
		maxDups = maxRows * (3*queueDepth + 2)
	}
	t.Logf("%d events, %d duplicates after %s (bound %d)", len(want), dups, sig, maxDups)
	if dups > maxDups {
		t.Errorf("%d duplicates after %s, want at most %d", dups, sig, maxDups)
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached in %s; process output:\n%s", limit, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
