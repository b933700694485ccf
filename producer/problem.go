package producer

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// Problem is an RFC 9457 problem detail, the body of every error response.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// apiError is the one application error type handlers return; errorHandler
// maps it (and Echo's own errors) to problem+json.
type apiError struct {
	status     int
	slug       string
	detail     string
	retryAfter int    // seconds; 0 = no header
	reason     string // label of sluice_producer_rejected_total, if counted
}

func (e *apiError) Error() string { return e.slug + ": " + e.detail }

func badRequest(detail string) error {
	return &apiError{status: http.StatusBadRequest, slug: "invalid-request", detail: detail}
}

func unauthorized(detail string) error {
	return &apiError{status: http.StatusUnauthorized, slug: "unauthorized", detail: detail}
}

func forbidden(detail string) error {
	return &apiError{status: http.StatusForbidden, slug: "forbidden", detail: detail}
}

func notFound(detail string) error {
	return &apiError{status: http.StatusNotFound, slug: "not-found", detail: detail}
}

func unavailable(detail string, retryAfter int) error {
	return &apiError{status: http.StatusServiceUnavailable, slug: "unavailable", detail: detail, retryAfter: retryAfter}
}

// echoSlugs names the problems for errors raised by Echo itself.
var echoSlugs = map[int]string{
	http.StatusNotFound:              "not-found",
	http.StatusMethodNotAllowed:      "method-not-allowed",
	http.StatusRequestEntityTooLarge: "body-too-large",
	http.StatusRequestTimeout:        "request-timeout",
	http.StatusUnsupportedMediaType:  "unsupported-media-type",
	http.StatusBadRequest:            "invalid-request",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusTooManyRequests:       "rate-limited",
	http.StatusServiceUnavailable:    "unavailable",
}

// errorHandler writes every error as application/problem+json.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p, retry := problemOf(err)
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		if retry > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(retry))
		}
	case errors.As(err, &he):
		p.Status = he.Code
		slug, ok := echoSlugs[he.Code]
		if !ok {
			slug = "http-" + strconv.Itoa(he.Code)
		}
		p.Type = "/problems/" + slug
		if msg, ok := he.Message.(string); ok {
			p.Detail = msg
		} else {
			p.Detail = http.StatusText(he.Code)
		}
	default:
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "err", err)
	}
	p.Title = http.StatusText(p.Status)
	if p.Status == http.StatusMethodNotAllowed {
		// Echo sets Allow on the response already.
		p.Detail = "method " + c.Request().Method + " is not allowed here"
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(p.Status)
		return
	}
	_ = c.JSON(p.Status, p)
}

// problemOf returns the problem err answers as, and its Retry-After in
// seconds (0: none): an apiError's own, a 500 for anything else. The
// HTTP error handler and the WebSocket's error frames both use it.
func problemOf(err error) (Problem, int) {
	p := Problem{Status: http.StatusInternalServerError, Type: "/problems/internal", Detail: "internal error"}
	var ae *apiError
	retry := 0
	if errors.As(err, &ae) {
		p.Status, p.Type, p.Detail, retry = ae.status, "/problems/"+ae.slug, ae.detail, ae.retryAfter
	}
	p.Title = http.StatusText(p.Status)
	return p, retry
}
