// Package docs embeds the documents the binary serves: the OpenAPI
// description of the HTTP API (served at GET /openapi.yaml).
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
