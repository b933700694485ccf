package llm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"sluice/shared/envelope"
)

// Prompts are the system prompts by tenant.
type Prompts struct {
	// Default is the prompt of every tenant Tenants does not name.
	Default string `yaml:"default" json:"default"`
	// Tenants maps tenant ids to their prompts.
	Tenants map[string]string `yaml:"tenants" json:"tenants"`
}

// For returns tenant's system prompt.
func (p Prompts) For(tenant string) string {
	if s, ok := p.Tenants[tenant]; ok {
		return s
	}
	return p.Default
}

// LoadPrompts reads a prompts file: JSON when its name ends in .json, YAML
// otherwise. It returns an error when the file cannot be read, is malformed
// or has unknown fields.
func LoadPrompts(path string) (Prompts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Prompts{}, fmt.Errorf("read prompts: %w", err)
	}
	var p Prompts
	if strings.EqualFold(filepath.Ext(path), ".json") {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err = dec.Decode(&p)
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		err = dec.Decode(&p)
	}
	if err != nil {
		return Prompts{}, fmt.Errorf("parse prompts %s: %w", path, err)
	}
	return p, nil
}

// messageOverhead is the estimated tokens a message costs besides its
// content (role and separators).
const messageOverhead = 4

// EstimateTokens estimates the tokens of s without the model's tokenizer:
// one per CJK character, one per four other characters (rounded up).
func EstimateTokens(s string) int {
	cjk, other := 0, 0
	for _, r := range s {
		if r >= 0x2E80 && unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul) {
			cjk++
		} else {
			other++
		}
	}
	return cjk + (other+3)/4
}

// fitHistory returns the newest turns of history whose estimated tokens fit
// budget, oldest first. The result starts with a user turn, so a question's
// answer is never sent without its question.
func fitHistory(history []envelope.Turn, budget int) []envelope.Turn {
	used, i := 0, len(history)
	for i > 0 {
		t := EstimateTokens(history[i-1].Content) + messageOverhead
		if used+t > budget {
			break
		}
		used += t
		i--
	}
	for i < len(history) && history[i].Role != envelope.RoleUser {
		i++
	}
	return history[i:]
}
