// Package lab is the input and output side of the autoscaling lab
// (`sluice lab`) and of its cluster-scale simulation: the traffic profile
// they replay, the per-second samples they record, the CSV and PNG files
// they write, and the JSON line they end with.
//
// # Traffic profile
//
// A profile is the offered traffic, open loop: questions per second as a
// step function of time. A profile file is CSV, one step a line:
//
//	# bot_share: 0.2
//	second,questions_per_second
//	0,20
//	20,100   # the sale starts
//	60,20
//	150,20
//
// Each rate holds from its second until the next step's; the profile ends
// at the last step's second, so the last line marks the end. Blank lines
// and `#` comments are allowed, the header line is optional, and the
// directive `# bot_share: X` (0 to 1) says which share of the questions is
// produced straight to Kafka, as a bot does, instead of through the HTTP
// ingress. The name `flash-sale` loads the built-in profile ([FlashSale]).
//
// # Output
//
// A run writes into its output directory:
//   - a CSV of [Sample]s, one row per interval (normally one second), with
//     the columns t_s, offered_per_s, completed_per_s, refused_per_s, lag,
//     oldest_age_s, in_flight_ratio, queue_wait_p50_ms, queue_wait_p99_ms,
//     replicas, desired; an empty cell is a figure that does not exist
//     (no request started in the interval has no queue wait);
//   - PNG plots ([Plot], [PlotCompare]);
//   - and it ends with one JSON line, a [Summary], on standard output.
package lab
