package engine

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerConfig configures the HTTP server that carries /metrics, /healthz,
// /readyz and the API endpoints other packages add.
type ServerConfig struct {
	// Addr is the listen address. Default "127.0.0.1:8080"; ":0" picks a
	// free port (see Server.Addr).
	Addr string `yaml:"addr"`
	// ReadHeaderTimeout guards against slow clients. Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// Auth configures bearer tokens with scopes for the API endpoints
	// (/metrics, /healthz and /readyz stay open). See AuthConfig.
	Auth AuthConfig `yaml:"auth"`
	// TLS serves HTTPS when a certificate is configured.
	TLS ServerTLSConfig `yaml:"tls"`
	// MaskTraits lists trait keys whose string values GET /v1/profiles/{id}
	// masks like identifiers. Default: email, phone, name, address.
	MaskTraits []string `yaml:"mask_traits"`
}

// ServerTLSConfig names the server's certificate and key (PEM). Both or
// neither; neither serves plain HTTP.
type ServerTLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Defaults fills zero fields with their defaults.
func (c *ServerConfig) Defaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	c.Auth.Defaults()
	if c.MaskTraits == nil {
		c.MaskTraits = []string{"email", "phone", "name", "address"}
	}
}

// Validate reports the first invalid field.
func (c ServerConfig) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr: %q is not host:port: %w", c.Addr, err)
	}
	if c.ReadHeaderTimeout < 0 {
		return fmt.Errorf("read_header_timeout: must be >= 0")
	}
	if err := c.Auth.Validate(); err != nil {
		return fmt.Errorf("auth.%w", err)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together")
	}
	return nil
}

// ReadyCheck returns nil when the component it checks can serve.
type ReadyCheck func(ctx context.Context) error

// Server is the process's HTTP server. Register handlers and ready checks
// before Listen.
type Server struct {
	cfg  ServerConfig
	mux  *http.ServeMux
	log  *slog.Logger
	srv  *http.Server
	ln   net.Listener
	mu   sync.Mutex
	chks map[string]ReadyCheck
}

// NewServer builds a server that exposes reg on /metrics, together with
// Go runtime and process collectors registered on reg.
func NewServer(cfg ServerConfig, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http.%w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: log, chks: map[string]ReadyCheck{}}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return s, nil
}

// Handle registers h for pattern (net/http ServeMux syntax, e.g.
// "GET /v1/profiles/lookup").
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddReadyCheck adds a named check to /readyz.
func (s *Server) AddReadyCheck(name string, fn ReadyCheck) {
	s.mu.Lock()
	s.chks[name] = fn
	s.mu.Unlock()
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	s.mu.Lock()
	names := make([]string, 0, len(s.chks))
	for n := range s.chks {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}{Ready: true, Checks: map[string]string{}}
	for _, n := range names {
		s.mu.Lock()
		fn := s.chks[n]
		s.mu.Unlock()
		if err := fn(ctx); err != nil {
			out.Ready = false
			out.Checks[n] = err.Error()
		} else {
			out.Checks[n] = "ok"
		}
	}
	code := http.StatusOK
	if !out.Ready {
		code = http.StatusServiceUnavailable
	}
	WriteJSON(w, code, out)
}

// Listen binds the listen address; Addr then reports the bound address.
// Calling it again does nothing.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on http.addr %s: %w", s.cfg.Addr, err)
	}
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	if t := s.cfg.TLS; t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("http.tls: %w", err)
		}
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, s.srv.TLSConfig)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address after Listen, e.g. "127.0.0.1:41234".
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.cfg.Addr
	}
	return s.ln.Addr().String()
}

// Serve serves until ctx is done, then shuts down gracefully (5s).
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes {"error": msg} with the given status. Every API
// endpoint reports errors this way, so clients parse one shape.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}
