package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// widgetLine is the widget's demo URL in `sluice dev`'s banner.
var widgetLine = regexp.MustCompile(`^\s+(http://\S+/widget/#token=(\S+))$`)

// chromium returns the path of a Chromium (Debian's chromium package; .ci/run
// installs it), or "" when there is none.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// needChromium returns the path of Chromium, or skips the test (in -short
// mode, or where there is none) saying why.
func needChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	path := chromium()
	if path == "" {
		t.Skip("no Chromium found (chromium, chromium-browser, google-chrome): install Debian's chromium package (.ci/run does) to run the browser test")
	}
	return path
}

// browser starts a headless Chromium with a fresh profile and returns a
// chromedp context on its first tab, ended with the test.
func browser(t *testing.T, path string) context.Context {
	t.Helper()
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 720),
	)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	// The first call starts the browser, which lives as long as its
	// context: no timeout on that one.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	ctx, cancelAll := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelAll)
	return ctx
}

// lastBot reads the widget's last answer bubble: its state (waiting,
// streaming, done) and text, once cond (a JS expression over b, the bubble)
// holds. It waits on DOM mutations, so it sees a streaming state between
// two pieces.
func lastBot(t *testing.T, ctx context.Context, cond string) (state, text string) {
	t.Helper()
	type bubble struct {
		State string `json:"state"`
		Text  string `json:"text"`
	}
	js := `(() => { const all = document.querySelectorAll('.sluice-w-msg.bot'); const b = all[all.length-1];
		if (!b || !(` + cond + `)) return null; return {state: b.dataset.state || '', text: b.textContent}; })()`
	got, err := chromedp.Run(ctx, chromedp.Poll[bubble](js, chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(60*time.Second)))
	if err != nil {
		t.Fatalf("waiting for the last answer bubble where %s: %v", cond, err)
	}
	return got.State, got.Text
}

func count(t *testing.T, ctx context.Context, selector string) int {
	t.Helper()
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('`+selector+`').length`))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// askInWidget types q into the widget and waits until its answer has
// streamed at least one piece, and then until it is done. It returns the
// text seen while streaming and the final answer.
func askInWidget(t *testing.T, ctx context.Context, q string) (partial, final string) {
	t.Helper()
	bots := count(t, ctx, ".sluice-w-msg.bot")
	if err := chromedp.Do(ctx,
		chromedp.WaitEnabled(".sluice-w-form button"),
		chromedp.SendKeys(".sluice-w-form input", q),
		chromedp.Click(".sluice-w-form button"),
	); err != nil {
		t.Fatalf("ask %q: %v", q, err)
	}
	n := `document.querySelectorAll('.sluice-w-msg.bot').length > ` + strconv.Itoa(bots)
	_, partial = lastBot(t, ctx, n+` && b.dataset.state === 'streaming' && b.textContent.length > 0`)
	_, final = lastBot(t, ctx, n+` && b.dataset.state === 'done'`)
	return partial, final
}

// TestWidgetInBrowser loads the storefront widget from a real `sluice dev`
// in headless Chromium: two questions whose answers appear piece by piece,
// the second answered with the first turn's context (the mock LLM quotes
// the earlier question), and a reload in the middle of an answer, which
// resumes it from its last event id. With -update, its screenshot becomes
// docs/img/widget.png.
func TestWidgetInBrowser(t *testing.T) {
	path := needChromium(t)
	dev := startProc(t, []string{"SLUICE_LOG_LEVEL=warn"}, "dev",
		"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--dev-kafka-addr", "127.0.0.1:0",
		// Slow enough pieces that the page shows an answer half-way.
		"--mock-latency", "0", "--mock-jitter", "0", "--mock-token-delay", "40ms")
	m := dev.waitLine(t, widgetLine)
	page, tok := m[1], m[2]
	ctx := browser(t, path)

	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(".sluice-w-form input")); err != nil {
		t.Fatalf("load %s: %v", page, err)
	}
	const q1, q2, q3 = "When does my order ship?", "Can I still use my coupon?", "How do refunds work?"
	partial, first := askInWidget(t, ctx, q1)
	if partial == first || !strings.HasPrefix(first, partial) {
		t.Errorf("first answer: saw %q while streaming, then %q: want a proper prefix of the answer first", partial, first)
	}
	partial, second := askInWidget(t, ctx, q2)
	if partial == second || !strings.HasPrefix(second, partial) {
		t.Errorf("second answer: saw %q while streaming, then %q", partial, second)
	}
	if !strings.Contains(second, q1) {
		t.Errorf("second answer %q does not use the first turn's context (the mock quotes the earlier question %q)", second, q1)
	}

	// A reload while the third answer streams: the page comes back with
	// the dialog, and the answer resumes where it stopped.
	bots := count(t, ctx, ".sluice-w-msg.bot")
	if err := chromedp.Do(ctx, chromedp.SendKeys(".sluice-w-form input", q3), chromedp.Click(".sluice-w-form button")); err != nil {
		t.Fatal(err)
	}
	_, partial = lastBot(t, ctx, `document.querySelectorAll('.sluice-w-msg.bot').length > `+strconv.Itoa(bots)+` && b.dataset.state === 'streaming' && b.textContent.length > 0`)
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(".sluice-w-form input")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	_, third := lastBot(t, ctx, `document.querySelectorAll('.sluice-w-msg.bot').length === 3 && b.dataset.state === 'done'`)
	if !strings.HasPrefix(third, partial) || third == partial {
		t.Errorf("third answer after the reload: %q, saw %q before it", third, partial)
	}
	if n := count(t, ctx, ".sluice-w-msg.user"); n != 3 {
		t.Errorf("%d questions shown after the reload, want 3", n)
	}

	// What the page shows is what the dialog's history holds.
	dialogID, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => { for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i);
		if (k.startsWith('sluice:')) return JSON.parse(localStorage.getItem(k)).dialog; } return ''; })()`))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(page)
	turns := dialogTurns(t, u.Scheme+"://"+u.Host, dialogID, tok)
	want := []string{q1, first, q2, second, q3, third}
	if len(turns) != len(want) {
		t.Fatalf("history has %d turns, want %d: %q", len(turns), len(want), turns)
	}
	for i := range want {
		if turns[i] != want[i] {
			t.Errorf("turn %d: history %q, page %q", i, turns[i], want[i])
		}
	}

	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "widget.png")
	if *updateDocs {
		out = "../docs/img/widget.png"
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dialogTurns reads the contents of a dialog's turns through the API.
func dialogTurns(t *testing.T, api, dialogID, tok string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, api+"/v1/dialogs/"+dialogID, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d struct {
		Turns []struct {
			Content string `json:"content"`
		} `json:"turns"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/dialogs/%s: %d %v", dialogID, resp.StatusCode, err)
	}
	var out []string
	for _, tr := range d.Turns {
		out = append(out, tr.Content)
	}
	return out
}

// TestWidgetHandoffAndRefusal: with the LLM down, the canned answer hands
// the shopper over to a human, which the widget says; a question refused by
// the rate limit (429 with retry_after) stays pending, the widget shows the
// wait with the send button off, and asks it again when the wait is over.
func TestWidgetHandoffAndRefusal(t *testing.T) {
	path := needChromium(t)
	dev := startProc(t, []string{"SLUICE_LOG_LEVEL=error"}, "dev",
		"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--dev-kafka-addr", "127.0.0.1:0",
		// One question per 10 s: the second, asked once the first is
		// answered, is refused with a wait of a few seconds.
		"--mock-error-rate", "1", "--user-rate", "6/m:1")
	page := dev.waitLine(t, widgetLine)[1]
	ctx := browser(t, path)
	if err := chromedp.Do(ctx, chromedp.Navigate(page), chromedp.WaitVisible(".sluice-w-form input"),
		chromedp.SendKeys(".sluice-w-form input", "xyzzy plugh"), chromedp.Click(".sluice-w-form button")); err != nil {
		t.Fatal(err)
	}
	_, canned := lastBot(t, ctx, `b.dataset.state === 'done'`)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('.sluice-w-msg.handoff[data-handoff="true"]') !== null`,
		chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("no handoff notice after the canned answer %q: %v", canned, err)
	}

	if err := chromedp.Do(ctx, chromedp.SendKeys(".sluice-w-form input", "and again"), chromedp.Click(".sluice-w-form button")); err != nil {
		t.Fatal(err)
	}
	type shown struct {
		Status   string `json:"status"`
		Disabled bool   `json:"disabled"`
		Bubble   string `json:"bubble"` // the pending answer's state
		Pending  string `json:"pending"`
	}
	got, err := chromedp.Run(ctx, chromedp.Poll[shown](`(() => { const s = document.querySelector('.sluice-w-status');
		if (!s.classList.contains('error')) return null;
		const all = document.querySelectorAll('.sluice-w-msg.bot'); const b = all[all.length-1];
		let pending = '';
		for (let i = 0; i < localStorage.length; i++) { const k = localStorage.key(i);
			if (k.startsWith('sluice:')) { const p = JSON.parse(localStorage.getItem(k)).pending; pending = p ? p.text : ''; } }
		return {status: s.textContent, disabled: document.querySelector('.sluice-w-form button').disabled,
			bubble: all.length === 2 ? b.dataset.state : 'bubbles: ' + all.length, pending: pending}; })()`,
		chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("no refusal shown: %v", err)
	}
	if !strings.Contains(got.Status, "too fast") || !strings.Contains(got.Status, "Asking again in") || !got.Disabled {
		t.Errorf("refusal shown as %q, send disabled %v: want the rate limit and its wait, and the button off", got.Status, got.Disabled)
	}
	if got.Bubble != "waiting" || got.Pending != "and again" {
		t.Errorf("while refused: answer bubble %q, pending question %q: want the question kept pending, its bubble waiting", got.Bubble, got.Pending)
	}
	// After the wait the widget asks again, and the answer comes.
	if _, text := lastBot(t, ctx, `document.querySelectorAll('.sluice-w-msg.bot').length === 2 && b.dataset.state === 'done'`); text == "" {
		t.Errorf("the question asked again after the wait has an empty answer")
	}
	if n := count(t, ctx, ".sluice-w-msg.user"); n != 2 {
		t.Errorf("%d questions shown, want 2: the retry is not shown as a new question", n)
	}
}
