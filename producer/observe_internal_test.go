package producer

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStreamsAreCountedNotTimed: a streamed answer (Server-Sent Events) and
// a WebSocket are counted in sluice_http_requests_total but kept out of the
// latency histogram, whose POST /v1/chat p99 the chart alerts on; a JSON
// answer is both.
func TestStreamsAreCountedNotTimed(t *testing.T) {
	reg := prometheus.NewRegistry()
	zero := func() float64 { return 0 }
	s := &Server{m: newMetrics(promauto.With(reg), zero, zero)}
	e := echo.New()
	e.POST("/v1/chat", func(c echo.Context) error {
		if c.Request().Header.Get(echo.HeaderAccept) == "text/event-stream" {
			c.Response().Header().Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
			c.Response().WriteHeader(http.StatusOK)
			return nil
		}
		return c.JSON(http.StatusOK, map[string]string{"answer": "a"})
	}, s.observe)
	e.GET("/v1/ws", func(c echo.Context) error {
		c.Response().WriteHeader(http.StatusSwitchingProtocols)
		return nil
	}, s.observe)
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodPost, "/v1/chat", nil),
		func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/v1/chat", nil)
			r.Header.Set(echo.HeaderAccept, "text/event-stream")
			return r
		}(),
		httptest.NewRequest(http.MethodGet, "/v1/ws", nil),
	} {
		e.ServeHTTP(httptest.NewRecorder(), r)
	}
	if n := testutil.ToFloat64(s.m.requests.WithLabelValues("/v1/chat", "POST", "200")); n != 2 {
		t.Errorf("POST /v1/chat counted %g times, want 2 (JSON and SSE)", n)
	}
	if n := testutil.ToFloat64(s.m.requests.WithLabelValues("/v1/ws", "GET", "101")); n != 1 {
		t.Errorf("GET /v1/ws counted %g times, want 1", n)
	}
	if n := testutil.CollectAndCount(s.m.duration); n != 1 {
		t.Errorf("%d latency series, want 1: POST /v1/chat's JSON answer alone", n)
	}
	h, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range h {
		if mf.GetName() != "sluice_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if got := m.GetHistogram().GetSampleCount(); got != 1 {
				t.Errorf("latency %v: %d samples, want the JSON answer's only", m.GetLabel(), got)
			}
		}
	}
}
