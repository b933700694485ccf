package faq_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sluice/consumer/llm/faq"
)

func mustSample(tb testing.TB) *faq.Index {
	tb.Helper()
	ix, err := faq.NewIndex(faq.Sample(), 0)
	if err != nil {
		tb.Fatal(err)
	}
	return ix
}

// topic names the sample's entries, in their order in sample.yaml.
func topic(m faq.Match) string {
	return []string{"发货", "退货", "优惠券", "发票", "会员", "退款"}[m.Entry]
}

func TestSampleMatches(t *testing.T) {
	ix := mustSample(t)
	for _, tc := range []struct{ q, want string }{
		{"优惠券还能用吗？", "优惠券"},
		{"你好，请问我买的衣服什么时候发货啊？", "发货"},
		{"发货", "发货"},
		{"我想退货", "退货"},
		{"发票怎么开", "发票"},
		{"积分能抵现金吗", "会员"},
		{"钱什么时候到账", "退款"},
		{"快递到哪了", "发货"},
		{"ＷＨＥＮ　ＤＯＥＳ　ＭＹ　ＯＲＤＥＲ　ＳＨＩＰ？", "发货"}, // full-width
		{"When does my order ship?", "发货"},
		{"Can I still use my coupon on it?", "优惠券"},
		{"How do I return a jacket?", "退货"},
		{"I want my money back!", "退款"},
		{"会员", "会员"},
	} {
		m, ok := ix.Best(tc.q)
		if !ok || topic(m) != tc.want {
			t.Errorf("Best(%q) = %q (%.2f, %v), want the %s entry", tc.q, m.Question, m.Score, ok, tc.want)
		}
	}
	for _, q := range []string{
		"", "？？？", "今天天气怎么样", "你们老板是谁", "我要投诉快递员", "怎么联系人工客服", "这件衣服有红色的吗",
		"发货地址能改吗", "hello", "what's the weather", "what is your phone number", "is there a discount",
		"我的手机号是[phone]，帮我查一下订单",
	} {
		if m, ok := ix.Best(q); ok {
			t.Errorf("Best(%q) = %q (%.2f), want no match", q, m.Question, m.Score)
		}
	}
}

func TestTerms(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"什么时候发货", "什么 么时 时候 候发 发货"},
		{"请问，优惠券还能用吗？", "优惠 惠券 券还 还能 能用"},
		{"Ｗｈｅｎ does my ORDER ship", "order ship"},
		{"券", "券"},
		{"iPhone15 发货", "iphone15 发货"},
		{"！！", ""},
	} {
		if got := strings.Join(faq.Terms(tc.in), " "); got != tc.want {
			t.Errorf("Terms(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParse(t *testing.T) {
	good := "entries:\n  - questions: [发货]\n    answer: 24 小时内发货\n"
	if e, err := faq.Parse([]byte(good), "x.yaml"); err != nil || len(e) != 1 || e[0].Answer != "24 小时内发货" {
		t.Errorf("Parse(yaml) = %+v, %v", e, err)
	}
	js := `{"entries":[{"questions":["退款"],"answer":"1-3 天"}]}`
	if e, err := faq.Parse([]byte(js), "x.json"); err != nil || len(e) != 1 || e[0].Questions[0] != "退款" {
		t.Errorf("Parse(json) = %+v, %v", e, err)
	}
	for name, tc := range map[string]struct{ data, file string }{
		"Empty":        {"entries: []\n", "x.yaml"},
		"Malformed":    {"entries: [", "x.yaml"},
		"UnknownField": {"entries:\n  - question: [x]\n    answer: y\n", "x.yaml"},
		"BadJSON":      {`{"entries":`, "x.json"},
	} {
		if _, err := faq.Parse([]byte(tc.data), tc.file); err == nil {
			t.Errorf("%s: Parse accepted %q", name, tc.data)
		}
	}
	if _, err := faq.NewIndex([]faq.Entry{{Questions: []string{"x"}}}, 0); !errors.Is(err, faq.ErrInvalidEntry) {
		t.Errorf("entry without answer: %v, want ErrInvalidEntry", err)
	}
	if _, err := faq.NewIndex([]faq.Entry{{Questions: []string{"？"}, Answer: "a"}}, 0); !errors.Is(err, faq.ErrInvalidEntry) {
		t.Errorf("entry without searchable question: %v, want ErrInvalidEntry", err)
	}
	if _, err := faq.NewIndex(nil, 0); !errors.Is(err, faq.ErrEmpty) {
		t.Errorf("no entries: %v, want ErrEmpty", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("shop-a.yaml", "entries:\n  - questions: [发货时间]\n    answer: A 店当天发货\n")
	write("shop-b.json", `{"entries":[{"questions":["发货时间"],"answer":"B 店次日发货"}]}`)
	write("README.txt", "not a faq")
	lib, err := faq.Load(faq.Config{Dir: dir, Sample: true})
	if err != nil {
		t.Fatal(err)
	}
	for tenant, want := range map[string]string{"shop-a": "A 店当天发货", "shop-b": "B 店次日发货"} {
		if m, ok := lib.For(tenant).Best("发货时间"); !ok || m.Answer != want {
			t.Errorf("tenant %s: %q, %v; want %q", tenant, m.Answer, ok, want)
		}
	}
	if m, ok := lib.For("other").Best("什么时候发货"); !ok || !strings.HasPrefix(m.Answer, "订单付款后") {
		t.Errorf("tenant without a file: %q, %v; want the sample's shipping answer", m.Answer, ok)
	}
	if own, def := lib.Tenants(); own != 2 || !def {
		t.Errorf("Tenants() = %d, %v", own, def)
	}

	if lib, err := faq.Load(faq.Config{}); err != nil || lib.For("x") != nil {
		t.Errorf("empty config: %v, %v", lib.For("x"), err)
	}
	write("shop-a.json", `{"entries":[{"questions":["x"],"answer":"y"}]}`)
	if _, err := faq.Load(faq.Config{Dir: dir}); err == nil {
		t.Error("two files of one tenant accepted")
	}
	if _, err := faq.Load(faq.Config{File: filepath.Join(dir, "missing.yaml")}); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := faq.Load(faq.Config{Dir: filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing dir accepted")
	}
}

func FuzzBest(f *testing.F) {
	ix := mustSample(f)
	for _, s := range []string{"优惠券还能用吗", "When does my order ship?", "", "券", "ＡＢＣ１２３", "\xff\xfe", "a  b\u3000c", "的的的吗吗"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		for _, m := range ix.Rank(q, 3) {
			if math.IsNaN(m.Score) || math.IsInf(m.Score, 0) || m.Score <= 0 || m.Entry < 0 || m.Entry >= ix.Len() || m.Answer == "" {
				t.Fatalf("Rank(%q) returned %+v", q, m)
			}
		}
		if m, ok := ix.Best(q); ok && m.Score < ix.MinScore() {
			t.Fatalf("Best(%q) = %+v below the minimum score", q, m)
		}
		// A question worded exactly like a variant always finds its entry.
		if idx, ok := ix.Best(q + " " + q); ok && idx.Answer == "" {
			t.Fatalf("Best(%q) matched an entry without answer", q)
		}
	})
}

func BenchmarkBest(b *testing.B) {
	ix := mustSample(b)
	b.ReportAllocs()
	for b.Loop() {
		ix.Best("你好，请问我买的衣服什么时候发货啊？")
	}
}
