# Renders consumer-throughput.png and .svg from the consumer table of docs/benchmarks.md.
# Run from docs/img: gnuplot consumer-throughput.gp

$data << EOD
"Sluice: in-flight budget 256\n(per-dialog order, default)"   723  853
"One record at a time\nper partition (--order-by partition)"  29   40
EOD
set title "Consumer throughput, mock LLM 300 ms, 12 partitions" font ",13"
set ylabel "answered requests/s"
set yrange [0:1000]
set ytics 200
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror scale 0 noenhanced font ",11"
set xrange [-0.6:1.6]
set bmargin 5
set label 1 "25x fewer answers/s" at 1.0,160 center front font ",14" tc rgb "#b22222"
set ytics nomirror
set key top right box opaque noenhanced
set style data histogram
set style histogram clustered gap 1
set style fill solid 1.0 border lc rgb "#333333"
set boxwidth 0.9
w = 1.0/3
do for [fmt in "png svg"] {
  if (fmt eq "png") { set terminal pngcairo size 800,500 font "DejaVu Sans,11" } else { set terminal svg size 800,500 font "DejaVu Sans,11" dynamic }
  set output "consumer-throughput.".fmt
  plot $data using 2:xtic(1) title "measured" lc rgb "#1f77b4", \
       ''    using 3 title "ceiling (in flight / 300 ms)" lc rgb "#c7c7c7", \
       ''    using ($0 - w/2):2:(sprintf("%d/s", $2)) with labels offset 0,0.8 font ",12" notitle, \
       ''    using ($0 + w/2):3:(sprintf("%d/s", $3)) with labels offset 0,0.8 font ",11" tc rgb "#555555" notitle
}
