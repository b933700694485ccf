package pii_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"sluice/shared/pii"
)

// idNumber completes 17 digits with their check character.
func idNumber(first17 string) string {
	w := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, c := range first17 {
		sum += int(c-'0') * w[i]
	}
	return first17 + string("10X98765432"[sum%11])
}

// cardNumber completes digits with their Luhn check digit.
func cardNumber(prefix string) string {
	for d := '0'; d <= '9'; d++ {
		s := prefix + string(d)
		if luhnOK(s) {
			return s
		}
	}
	panic("unreachable")
}

func luhnOK(s string) bool {
	sum := 0
	for i := len(s) - 1; i >= 0; i-- {
		d := int(s[i] - '0')
		if (len(s)-1-i)%2 == 1 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

var (
	validID   = idNumber("11010119900307123") // ends in a digit or X
	validIDX  = findIDWithX()                 // ends in X
	validCard = cardNumber("622202123456789") // 16 digits
	card19    = cardNumber("622848001234567890")
)

func findIDWithX() string {
	for i := 100; i < 999; i++ {
		id := idNumber(fmt.Sprintf("44030619851212%03d", i))
		if strings.HasSuffix(id, "X") {
			return id
		}
	}
	panic("no ID with X")
}

func TestMask(t *testing.T) {
	badCard := validCard[:15] + string('0'+(validCard[15]-'0'+1)%10)
	badID := validID[:17] + map[bool]string{true: "1", false: "2"}[validID[17] != '1']
	for _, tc := range []struct {
		name, in, want string
		hits           pii.Hits
	}{
		{"Empty", "", "", pii.Hits{}},
		{"NoPII", "优惠券还能用吗？", "优惠券还能用吗？", pii.Hits{}},
		{"Phone", "我的电话13812345678，请回电", "我的电话[phone]，请回电", pii.Hits{pii.Phone: 1}},
		{"PhoneSpaces", "call 138 1234 5678 now", "call [phone] now", pii.Hits{pii.Phone: 1}},
		{"PhoneDashes", "138-1234-5678", "[phone]", pii.Hits{pii.Phone: 1}},
		{"PhonePlus86", "+86 138-1234-5678", "[phone]", pii.Hits{pii.Phone: 1}},
		{"Phone86Glued", "+8613812345678.", "[phone].", pii.Hits{pii.Phone: 1}},
		{"Phone0086", "0086 13812345678", "[phone]", pii.Hits{pii.Phone: 1}},
		{"PhoneParen86", "(+86)13812345678", "(+86)[phone]", pii.Hits{pii.Phone: 1}},
		{"PhoneFullWidth", "电话１３８１２３４５６７８", "电话[phone]", pii.Hits{pii.Phone: 1}},
		{"PhoneIdeographicSpace", "138\u30001234\u30005678", "[phone]", pii.Hits{pii.Phone: 1}},
		{"PhoneLetters", "tel:13812345678x", "tel:[phone]x", pii.Hits{pii.Phone: 1}},
		{"TwoPhones", "13812345678/15912345678", "[phone]/[phone]", pii.Hits{pii.Phone: 2}},
		{"NotPhone12Digits", "订单 138123456789", "订单 138123456789", pii.Hits{}},
		{"NotPhoneWrongSecond", "12812345678", "12812345678", pii.Hits{}},
		{"NotPhoneDigitBefore", "213812345678", "213812345678", pii.Hits{}},
		{"NotPhoneDoubleSpace", "138  1234  5678", "138  1234  5678", pii.Hits{}},
		{"ID", "身份证" + validID + "。", "身份证[id-card]。", pii.Hits{pii.IDCard: 1}},
		{"IDWithX", "id " + validIDX + " ok", "id [id-card] ok", pii.Hits{pii.IDCard: 1}},
		{"IDWithLowerX", "id " + strings.ToLower(validIDX), "id [id-card]", pii.Hits{pii.IDCard: 1}},
		{"IDBadChecksum", badID, badID, pii.Hits{}},
		{"Card", "卡号" + validCard, "卡号[bank-card]", pii.Hits{pii.BankCard: 1}},
		{"CardGroups", "card " + validCard[:4] + " " + validCard[4:8] + " " + validCard[8:12] + " " + validCard[12:], "card [bank-card]", pii.Hits{pii.BankCard: 1}},
		{"Card19", card19, "[bank-card]", pii.Hits{pii.BankCard: 1}},
		{"CardBadLuhn", badCard, badCard, pii.Hits{}},
		{"CardTooLong", validCard + validCard, validCard + validCard, pii.Hits{}},
		// Luhn-valid, but no card starts like an order number does.
		{"OrderNumberPassingLuhn", "订单" + cardNumber("202611110012345678"), "订单" + cardNumber("202611110012345678"), pii.Hits{}},
		{"Visa", "card " + cardNumber("411111111111111"), "card [bank-card]", pii.Hits{pii.BankCard: 1}},
		{"Mastercard2Series", cardNumber("222100000000000"), "[bank-card]", pii.Hits{pii.BankCard: 1}},
		{"Amex", cardNumber("37828224631000"), "[bank-card]", pii.Hits{pii.BankCard: 1}},
		{"ICBCLegacy", cardNumber("955880123456789012"), "[bank-card]", pii.Hits{pii.BankCard: 1}},
		{"Email", "mail me: li.lei+shop@example.com.cn!", "mail me: [email]!", pii.Hits{pii.Email: 1}},
		{"EmailDigits", "13812345678@163.com", "[email]", pii.Hits{pii.Email: 1}},
		{"EmailGluedDigits", "a@b.cc13812345678", "[email][phone]", pii.Hits{pii.Email: 1, pii.Phone: 1}},
		{"NotEmail", "@someone hi@ there a@b", "@someone hi@ there a@b", pii.Hits{}},
		{"NotEmailShortTLD", "a@b.c", "a@b.c", pii.Hits{}},
		{"Mixed", "电话 13812345678, 邮箱 x@y.com, 卡 " + validCard, "电话 [phone], 邮箱 [email], 卡 [bank-card]",
			pii.Hits{pii.Phone: 1, pii.Email: 1, pii.BankCard: 1}},
		{"PhoneInsideDate", "2024-01-15 13812345678", "2024-01-15 [phone]", pii.Hits{pii.Phone: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, hits := pii.Scan(tc.in)
			if got != tc.want || hits != tc.hits {
				t.Errorf("Scan(%q) = %q %v, want %q %v", tc.in, got, hits, tc.want, tc.hits)
			}
			if again := pii.Mask(got); again != got {
				t.Errorf("masking twice changed %q to %q", got, again)
			}
		})
	}
}

func TestStripLabels(t *testing.T) {
	if got := pii.StripLabels(pii.Mask("电话13812345678，邮箱 a@b.com")); got != "电话 ，邮箱  " {
		t.Errorf("StripLabels = %q", got)
	}
	if got := pii.StripLabels("[不是标签]"); got != "[不是标签]" {
		t.Errorf("StripLabels changed %q", got)
	}
}

func TestMaskReturnsInputUnchanged(t *testing.T) {
	in := strings.Repeat("没有个人信息 no personal data 123 ", 20)
	if got := pii.Mask(in); got != in {
		t.Fatalf("Mask changed a text without personal data: %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { pii.Mask(in) }); n != 0 {
		t.Errorf("Mask of a clean text allocates %v times, want 0", n)
	}
}

func TestAuditor(t *testing.T) {
	var buf bytes.Buffer
	reg := prometheus.NewRegistry()
	a, err := pii.NewAuditor(slog.New(slog.NewJSONHandler(&buf, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	got := a.Mask(context.Background(), "call 13812345678 or 13912345678, mail a@b.com", "question", slog.String("request_id", "r1"))
	if got != "call [phone] or [phone], mail [email]" {
		t.Errorf("masked %q", got)
	}
	if v := testutil.ToFloat64(a.Counter(pii.Phone)); v != 2 {
		t.Errorf("phone counter %v, want 2", v)
	}
	if v := testutil.ToFloat64(a.Counter(pii.Email)); v != 1 {
		t.Errorf("email counter %v, want 1", v)
	}
	line := buf.String()
	for _, want := range []string{`"msg":"pii masked"`, `"where":"question"`, `"phone":2`, `"email":1`, `"request_id":"r1"`} {
		if !strings.Contains(line, want) {
			t.Errorf("audit line %s lacks %s", line, want)
		}
	}
	if strings.Contains(line, "13812345678") || strings.Contains(line, "a@b.com") {
		t.Errorf("audit line holds a raw value: %s", line)
	}
	buf.Reset()
	if got := a.Mask(context.Background(), "nothing here", "answer"); got != "nothing here" || buf.Len() != 0 {
		t.Errorf("clean text: masked %q, logged %q", got, buf.String())
	}
	// A second auditor on the same registry shares the counter.
	b, err := pii.NewAuditor(nil, reg)
	if err != nil {
		t.Fatalf("second auditor on one registry: %v", err)
	}
	b.Mask(context.Background(), "13812345678", "answer")
	if v := testutil.ToFloat64(a.Counter(pii.Phone)); v != 3 {
		t.Errorf("shared phone counter %v, want 3", v)
	}
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(pii.NewHandler(slog.NewJSONHandler(&buf, nil)))
	log = log.With("user_text", "我的电话13812345678").WithGroup("g")
	log.Error("question from 13912345678 failed",
		"err", fmt.Errorf("decode %q: %w", "15012345678", errors.New("bad")),
		"who", stringer{"15112345678"},
		"raw", []byte("15212345678"),
		"struct", struct{ Phone string }{"15312345678"},
		slog.Group("inner", "mail", "x@y.com", "n", 42),
		"clean", "订单 42 已发货",
		"count", 3,
	)
	out := buf.String()
	for _, raw := range []string{"13812345678", "13912345678", "15012345678", "15112345678", "15212345678", "15312345678", "x@y.com"} {
		if strings.Contains(out, raw) {
			t.Errorf("log line holds %s: %s", raw, out)
		}
	}
	for _, want := range []string{`"msg":"question from [phone] failed"`, `"user_text":"我的电话[phone]"`, `"clean":"订单 42 已发货"`, `"count":3`, `"mail":"[email]"`, `"n":42`} {
		if !strings.Contains(out, want) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
}

// digitRuns returns the maximal digit runs of s (ASCII and full-width
// digits, as ASCII) and whether an X follows each.
func digitRuns(s string) (runs []string, xs []bool) {
	var cur []byte
	flush := func(x bool) {
		if len(cur) > 0 {
			runs, xs = append(runs, string(cur)), append(xs, x)
			cur = cur[:0]
		}
	}
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			cur = append(cur, byte(r))
		case r >= '０' && r <= '９':
			cur = append(cur, byte(r-'０'+'0'))
		default:
			flush(r == 'X' || r == 'x')
		}
	}
	flush(false)
	return runs, xs
}

// validAsWhole is the test's own reading of the rules for one digit run.
func validAsWhole(run string, x bool) string {
	n := len(run)
	if n == 11 && run[0] == '1' && run[1] >= '3' {
		return "phone"
	}
	if ((n == 17 && x && idNumber(run) == run+"X") || (n == 18 && idNumber(run[:17]) == run)) && plausibleBirth(run) {
		return "id"
	}
	if n >= 13 && n <= 19 && luhnOK(run) && issuerPrefix(run) {
		return "card"
	}
	return ""
}

// issuerPrefix is the test's own list of card number beginnings.
func issuerPrefix(run string) bool {
	for _, p := range []string{"2200", "2201", "2202", "2203", "2204", "30", "34", "35", "36", "37", "38", "4", "5", "6", "95"} {
		if strings.HasPrefix(run, p) {
			return true
		}
	}
	p4, _ := strconv.Atoi(run[:4])
	return p4 >= 2221 && p4 <= 2720
}

func plausibleBirth(run string) bool {
	var y, m, d int
	fmt.Sscanf(run[6:14], "%4d%2d%2d", &y, &m, &d)
	return y >= 1900 && y <= 2099 && m >= 1 && m <= 12 && d >= 1 && d <= 31
}

func FuzzMask(f *testing.F) {
	for _, s := range []string{
		"我的电话13812345678", "+86 138-1234-5678", validID, validIDX, validCard, card19,
		"a@b.cc13812345678", "x@13812345678.com", "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9",
		"１３８１２３４５６７８", "2024-01-15 13812345678", "138\u30001234\u30005678", "12 13812345678 34",
		validIDX[:17] + "x5", validCard[:4] + " " + validCard[4:] + "-" + validCard,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, _ := pii.Scan(in)
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("Mask(%q) = %q is not valid UTF-8", in, out)
		}
		again, hits := pii.Scan(out)
		if again != out || hits.Total() != 0 {
			t.Fatalf("masking twice changed %q to %q (%v)", out, again, hits)
		}
		if !utf8.ValidString(out) {
			return
		}
		runs, xs := digitRuns(out)
		for i, r := range runs {
			if k := validAsWhole(r, xs[i]); k != "" {
				t.Fatalf("Mask(%q) = %q keeps the %s %s", in, out, k, r)
			}
		}
	})
}

// message2K is a 2 KB customer message with a phone number, an e-mail
// address, a card number and plenty of harmless digits.
func message2K() string {
	var b strings.Builder
	parts := []string{
		"您好，我的订单号是 202411210001234，昨天下单的羽绒服还没有发货，",
		"请问什么时候能到？我的手机号是 138 1234 5678，邮箱 li.lei@example.com，",
		"退款请退到卡号 " + validCard + "。优惠券满 300 减 50 还能用吗？",
		"Also, my order #4521 from 2024-11-11 has not shipped yet; please call +86 139-8765-4321. ",
	}
	for b.Len() < 2048 {
		for _, p := range parts {
			b.WriteString(p)
		}
	}
	return b.String()[:2048]
}

func BenchmarkMask2KB(b *testing.B) {
	msg := strings.ToValidUTF8(message2K(), "")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		pii.Mask(msg)
	}
}

func BenchmarkMask2KBClean(b *testing.B) {
	msg := strings.Repeat("优惠券还能用吗？什么时候发货？", 2048/len("优惠券还能用吗？什么时候发货？")+1)[:2046]
	msg = strings.ToValidUTF8(msg, "")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		pii.Mask(msg)
	}
}
