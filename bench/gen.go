package bench

import (
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

// GenConfig shapes the synthetic Segment traffic of Generator.
type GenConfig struct {
	// Seed makes the stream reproducible. Same seed, same events.
	Seed uint64
	// People is the number of distinct persons. Default 10000.
	People int
	// MalformedShare is the share of records that are deliberately bad
	// (each kind of rejection the decoder knows). Default 0.01.
	MalformedShare float64
	// Start is the timestamp of the first event. Default 2026-01-01 UTC.
	Start time.Time
}

func (c *GenConfig) defaults() {
	if c.People == 0 {
		c.People = 10000
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
}

// person is one synthetic human: a user id, one to three devices (each with
// an anonymous id and a device id), one or two emails, consent choices.
type person struct {
	userID   string
	anon     []string
	device   []string
	email    []string
	phone    string
	plan     string
	analytic bool
	ads      bool
	loggedIn []bool // per device
}

// Generator produces realistic Segment-spec events: people browsing
// anonymously on several devices, logging in (identify with traits),
// tracking product events with properties, pages and screens, occasional
// group and alias calls, Segment consent preferences and IAB strings, and a
// small share of malformed records. It is deterministic for a seed and
// not safe for concurrent use.
type Generator struct {
	cfg    GenConfig
	rng    *rand.Rand
	people []person
	n      uint64
	ts     time.Time
}

// NewGenerator returns a generator for cfg.
func NewGenerator(cfg GenConfig) *Generator {
	cfg.defaults()
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)), ts: cfg.Start}
	g.people = make([]person, cfg.People)
	for i := range g.people {
		p := &g.people[i]
		p.userID = "user-" + strconv.Itoa(100000+i)
		nd := 1 + g.rng.IntN(3)
		for d := 0; d < nd; d++ {
			p.anon = append(p.anon, g.uuid())
			p.device = append(p.device, "dev-"+g.hex(12))
			p.loggedIn = append(p.loggedIn, false)
		}
		p.email = append(p.email, "person"+strconv.Itoa(i)+"@example.com")
		if g.rng.IntN(4) == 0 {
			p.email = append(p.email, "p.alt"+strconv.Itoa(i)+"@mail.example.org")
		}
		if g.rng.IntN(2) == 0 {
			p.phone = "+1555" + strconv.Itoa(1000000+i)
		}
		p.plan = [...]string{"free", "pro", "team"}[g.rng.IntN(3)]
		p.analytic = g.rng.IntN(10) < 8
		p.ads = g.rng.IntN(10) < 5
	}
	return g
}

// Count returns how many events Next has produced.
func (g *Generator) Count() uint64 { return g.n }

func (g *Generator) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.rng.IntN(16)]
	}
	return string(b)
}

func (g *Generator) uuid() string {
	h := g.hex(32)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
}

// Next appends the next record to dst and returns it with its Kafka key
// (the anonymous id) and, for a deliberately malformed record, the reason
// the decoder must give; "" for a valid event.
func (g *Generator) Next(dst []byte) (rec []byte, key string, bad engine.Reason) {
	g.n++
	g.ts = g.ts.Add(time.Duration(1+g.rng.IntN(40)) * time.Millisecond)
	p := &g.people[g.rng.IntN(len(g.people))]
	d := g.rng.IntN(len(p.anon))
	key = p.anon[d]
	if g.cfg.MalformedShare > 0 && g.rng.Float64() < g.cfg.MalformedShare {
		return g.malformed(dst, p, d)
	}
	switch r := g.rng.IntN(100); {
	case !p.loggedIn[d] && r < 6, r < 4:
		p.loggedIn[d] = true
		dst = g.identify(dst, p, d)
	case r < 64:
		dst = g.track(dst, p, d)
	case r < 84:
		dst = g.page(dst, p, d, "page")
	case r < 94:
		dst = g.page(dst, p, d, "screen")
	case r < 97:
		dst = g.group(dst, p, d)
	default:
		dst = g.alias(dst, p, d)
	}
	return dst, key, ""
}

func field(dst []byte, name, v string) []byte {
	dst = append(dst, '"')
	dst = append(dst, name...)
	dst = append(dst, `":"`...)
	dst = append(dst, v...)
	return append(dst, `",`...)
}

func (g *Generator) head(dst []byte, typ string, p *person, d int) []byte {
	dst = append(dst, '{')
	dst = field(dst, "type", typ)
	dst = field(dst, "messageId", "msg-"+strconv.FormatUint(g.cfg.Seed, 36)+"-"+strconv.FormatUint(g.n, 36))
	dst = append(dst, `"timestamp":"`...)
	dst = g.ts.AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	dst = append(dst, `",`...)
	dst = field(dst, "anonymousId", p.anon[d])
	if p.loggedIn[d] {
		dst = field(dst, "userId", p.userID)
	}
	return dst
}

func (g *Generator) context(dst []byte, p *person, d int) []byte {
	dst = append(dst, `"context":{"library":{"name":"analytics.js","version":"4.1.0"},"ip":"203.0.113.`...)
	dst = strconv.AppendInt(dst, int64(g.rng.IntN(250)), 10)
	dst = append(dst, `","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15","locale":"en-US",`...)
	dst = append(dst, `"device":{"id":"`...)
	dst = append(dst, p.device[d]...)
	dst = append(dst, `","type":"ios"},`...)
	dst = append(dst, `"consent":{"categoryPreferences":{"necessary":true,"analytics":`...)
	dst = strconv.AppendBool(dst, p.analytic)
	dst = append(dst, `,"advertising":`...)
	dst = strconv.AppendBool(dst, p.ads)
	dst = append(dst, `}}`...)
	if p.loggedIn[d] {
		dst = append(dst, `,"traits":{"email":"`...)
		dst = append(dst, p.email[0]...)
		dst = append(dst, `"}`...)
	}
	return append(dst, '}')
}

func (g *Generator) identify(dst []byte, p *person, d int) []byte {
	dst = g.head(dst, "identify", p, d)
	dst = append(dst, `"traits":{"email":"`...)
	dst = append(dst, p.email[g.rng.IntN(len(p.email))]...)
	dst = append(dst, `","plan":"`...)
	dst = append(dst, p.plan...)
	dst = append(dst, `","logins":`...)
	dst = strconv.AppendInt(dst, int64(g.rng.IntN(500)), 10)
	if p.phone != "" {
		dst = append(dst, `,"phone":"`...)
		dst = append(dst, p.phone...)
		dst = append(dst, '"')
	}
	dst = append(dst, `},`...)
	return append(g.context(dst, p, d), '}')
}

var products = [...]string{"Trail Shoe", "Rain Jacket", "Wool Socks", "Day Pack", "Headlamp", "Water Bottle"}
var trackEvents = [...]string{"Product Viewed", "Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Product Searched"}

func (g *Generator) track(dst []byte, p *person, d int) []byte {
	dst = g.head(dst, "track", p, d)
	dst = field(dst, "event", trackEvents[g.rng.IntN(len(trackEvents))])
	dst = append(dst, `"properties":{"product_id":"sku-`...)
	dst = strconv.AppendInt(dst, int64(10000+g.rng.IntN(5000)), 10)
	dst = append(dst, `","name":"`...)
	dst = append(dst, products[g.rng.IntN(len(products))]...)
	dst = append(dst, `","price":`...)
	dst = strconv.AppendFloat(dst, float64(500+g.rng.IntN(20000))/100, 'f', 2, 64)
	dst = append(dst, `,"currency":"USD","quantity":`...)
	dst = strconv.AppendInt(dst, int64(1+g.rng.IntN(3)), 10)
	dst = append(dst, `,"category":"outdoor"},`...)
	return append(g.context(dst, p, d), '}')
}

func (g *Generator) page(dst []byte, p *person, d int, typ string) []byte {
	dst = g.head(dst, typ, p, d)
	dst = field(dst, "name", products[g.rng.IntN(len(products))])
	dst = append(dst, `"properties":{"path":"/p/`...)
	dst = strconv.AppendInt(dst, int64(g.rng.IntN(900)), 10)
	dst = append(dst, `","referrer":"https://www.example.com/search?q=outdoor","title":"Outdoor gear"},`...)
	return append(g.context(dst, p, d), '}')
}

func (g *Generator) group(dst []byte, p *person, d int) []byte {
	dst = g.head(dst, "group", p, d)
	dst = field(dst, "groupId", "org-"+strconv.Itoa(g.rng.IntN(200)))
	dst = append(dst, `"traits":{"name":"Example Org","employees":42},`...)
	return append(g.context(dst, p, d), '}')
}

func (g *Generator) alias(dst []byte, p *person, d int) []byte {
	dst = append(dst, '{')
	dst = field(dst, "type", "alias")
	dst = field(dst, "messageId", "msg-"+strconv.FormatUint(g.cfg.Seed, 36)+"-"+strconv.FormatUint(g.n, 36))
	dst = append(dst, `"timestamp":"`...)
	dst = g.ts.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `",`...)
	dst = field(dst, "previousId", p.anon[d])
	dst = field(dst, "userId", p.userID)
	return append(g.context(dst, p, d), '}')
}

// malformed produces one of the rejections the decoder must recognise.
func (g *Generator) malformed(dst []byte, p *person, d int) ([]byte, string, engine.Reason) {
	key := p.anon[d]
	switch g.rng.IntN(8) {
	case 0: // cut off mid-object
		dst = g.track(dst, p, d)
		return dst[:len(dst)/2], key, "malformed_json"
	case 1:
		return append(dst, `{"event":"Product Viewed","anonymousId":"`+p.anon[d]+`"}`...), key, "missing_type"
	case 2:
		return append(dst, `{"type":"trak","event":"x","anonymousId":"`+p.anon[d]+`"}`...), key, "unknown_type"
	case 3:
		return append(dst, `{"type":"track","event":"Product Viewed","properties":{}}`...), key, "missing_identity"
	case 4:
		return append(dst, `{"type":"page","anonymousId":"`+p.anon[d]+`","timestamp":"yesterday"}`...), key, "bad_timestamp"
	case 5:
		return append(dst, "{\"type\":\"track\",\"event\":\"caf\xe9\",\"anonymousId\":\"a\"}"...), key, "invalid_utf8"
	case 6:
		return append(dst, `[1,2,3]`...), key, "not_object"
	default:
		dst = append(dst, `{"type":"track","event":"Big","anonymousId":"`+p.anon[d]+`","properties":{"blob":"`...)
		for i := 0; i < 40<<10; i++ {
			dst = append(dst, 'x')
		}
		return append(dst, `"}}`...), key, "too_large"
	}
}
