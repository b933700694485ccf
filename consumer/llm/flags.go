package llm

import "flag"

// RegisterFlags registers c's settings on fs, with c's values as defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.BaseURL, "llm-base-url", c.BaseURL, "OpenAI-compatible base URL including /v1; the client posts to {base}/chat/completions")
	fs.StringVar(&c.APIKey, "llm-api-key", c.APIKey, "API key of the LLM endpoint")
	fs.StringVar(&c.Model, "llm-model", c.Model, "model name")
	fs.Int64Var(&c.MaxTokens, "llm-max-tokens", c.MaxTokens, "max_tokens of each call (0 leaves it out)")
	fs.Float64Var(&c.Temperature, "llm-temperature", c.Temperature, "temperature of each call (0 leaves it out)")
	fs.DurationVar(&c.Timeout, "llm-timeout", c.Timeout, "timeout of one LLM call (the request's deadline bounds it too)")
	fs.StringVar(&c.SystemPrompt, "llm-system-prompt", c.SystemPrompt, "system prompt of tenants the prompts file does not name")
	fs.StringVar(&c.PromptsFile, "llm-prompts-file", c.PromptsFile, "YAML or JSON file of system prompts: default, and tenants (tenant id: prompt)")
	fs.IntVar(&c.HistoryTokens, "llm-history-tokens", c.HistoryTokens, "estimated token budget of the history sent with a question (newest turns first)")
	fs.IntVar(&c.Attempts, "llm-attempts", c.Attempts, "calls to one endpoint per request, retries included (retried: timeouts, connection errors, malformed answers, 408, 409, 429 and 5xx)")
	fs.DurationVar(&c.RetryBackoff, "llm-retry-backoff", c.RetryBackoff, "pause before the first retry; the n-th is n times it plus jitter, or the endpoint's Retry-After when longer")
	fs.DurationVar(&c.Reserve, "llm-reserve", c.Reserve, "time kept before a request's deadline for the fallbacks and the reply: model calls end that early")
	fs.IntVar(&c.BreakerFailures, "llm-breaker-failures", c.BreakerFailures, "consecutive failed calls that open an endpoint's circuit breaker")
	fs.Float64Var(&c.BreakerFailureRatio, "llm-breaker-failure-ratio", c.BreakerFailureRatio, "share of the calls (10 or more) of the last 10 s, or of the call timeout plus 2 s when longer, that must have failed too for the breaker to open (0: consecutive failures alone)")
	fs.DurationVar(&c.BreakerOpen, "llm-breaker-open", c.BreakerOpen, "how long an open circuit breaker skips its endpoint before probing it")
	fs.IntVar(&c.BreakerProbes, "llm-breaker-probes", c.BreakerProbes, "calls a half-open circuit breaker lets through; that many successes close it")
	fs.IntVar(&c.MaxConcurrent, "llm-max-concurrent", c.MaxConcurrent, "calls under way to each LLM endpoint per process; more wait for a slot within their deadline, or fall back")
	fs.IntVar(&c.RPM, "llm-rpm", c.RPM, "requests per minute to the primary endpoint, shared by all consumers through Redis (0: no limit)")
	fs.IntVar(&c.TPM, "llm-tpm", c.TPM, "estimated tokens (prompt and max tokens) per minute to the primary endpoint, shared through Redis (0: no limit)")
	fs.StringVar(&c.CannedAnswer, "llm-canned-answer", c.CannedAnswer, "answer, with handoff to an agent, when neither a model nor the FAQ answers")

	// The fallback tiers: the secondary model and the FAQ.
	fs.StringVar(&c.FallbackBaseURL, "llm-fallback-base-url", c.FallbackBaseURL, "base URL of the secondary endpoint tried when the primary fails (default the primary's)")
	fs.StringVar(&c.FallbackAPIKey, "llm-fallback-api-key", c.FallbackAPIKey, "API key of the secondary endpoint (default the primary's when the base URL is)")
	fs.StringVar(&c.FallbackModel, "llm-fallback-model", c.FallbackModel, "model of the secondary endpoint; setting it or the base URL enables the secondary")
	fs.StringVar(&c.FAQ.File, "faq-file", c.FAQ.File, "YAML or JSON FAQ (entries of questions and an answer) of tenants without a file in --faq-dir")
	fs.StringVar(&c.FAQ.Dir, "faq-dir", c.FAQ.Dir, "directory of per-tenant FAQ files named <tenant>.yaml, .yml or .json")
	fs.BoolVar(&c.FAQ.Sample, "faq-sample", c.FAQ.Sample, "use the built-in sample shop FAQ for tenants without one (sluice dev turns it on)")
	fs.Float64Var(&c.FAQ.MinScore, "faq-min-score", c.FAQ.MinScore, "normalised BM25 score an FAQ match needs (0: the default, 0.4)")

	fs.BoolVar(&c.MaskPrompt, "pii-mask-prompt", c.MaskPrompt, "mask phone, ID card and bank card numbers and e-mail addresses in what is sent to the model (answers, history and logs are masked always)")
}
