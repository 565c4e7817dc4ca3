// Package docs embeds the documents the binaries serve: the API's OpenAPI
// spec, which `cloud serve` answers GET /openapi.yaml with. The file here
// is the one source; cloud/api's route test checks it documents exactly
// the routes the API serves.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
