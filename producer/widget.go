package producer

import (
	"embed"
	"io/fs"
	"net/http"
	"path"

	"github.com/labstack/echo/v4"
)

// widgetFiles is the storefront chat widget (producer/widget): plain
// JavaScript, CSS and a demo page, served at /widget/ without a build step.
//
//go:embed widget
var widgetFiles embed.FS

// widgetFS is widgetFiles rooted at the widget directory.
var widgetFS, _ = fs.Sub(widgetFiles, "widget")

// serveWidget serves GET /widget/*: the widget's files, cached by browsers
// for five minutes (a new release reaches shoppers within that), and the
// demo page at /widget/.
func (s *Server) serveWidget(c echo.Context) error {
	name := path.Clean("/" + c.Param("*"))[1:]
	if name == "" {
		name = "index.html"
	}
	if _, err := fs.Stat(widgetFS, name); err != nil {
		return notFound("no such file")
	}
	c.Response().Header().Set("Cache-Control", "public, max-age=300")
	// The demo page reads its token from the URL fragment: no referrer
	// carries the page's address elsewhere.
	c.Response().Header().Set("Referrer-Policy", "no-referrer")
	c.Response().Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFileFS(c.Response(), c.Request(), widgetFS, name)
	return nil
}
