# Renders ingress-throughput.png and .svg from the "step by step" table of
# docs/benchmarks.md (200 closed-loop users, wait mode, mock LLM at 0 ms).
# Run from docs/img: gnuplot ingress-throughput.gp

# step, median, min, max answered/s of three 10 s runs, p99 range
$data << EOD
"at the start\n(c2bcd06)"           4197 4105 4449 "p99 75-84 ms"
"+ Redis\nauto-pipelining"         5225 5078 5386 "p99 61-67 ms"
"+ own LLM\nrequest encoding"      5380 5286 5615 "p99 58-63 ms"
"+ announce only\nmarked results"  5528 5377 5628 "p99 59-61 ms"
"+ reuse\nconsumer workers"        5626 5478 5700 "p99 57-60 ms"
"+ one read after\nthe other (now)" 5511 5085 5926 "p99 56-70 ms"
EOD
set title "Ingress, 200 users asking and waiting, everything on 2 cores" font ",13"
set ylabel "answered requests/s (median of 3 runs, bars min-max)"
set yrange [0:7000]
set ytics 1000 nomirror
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror scale 0 noenhanced font ",10"
set xrange [-0.6:5.6]
set bmargin 5
unset key
set style fill solid 1.0 border lc rgb "#333333"
set boxwidth 0.6
set arrow 1 from -0.6,5000 to 5.6,5000 nohead lc rgb "#b22222" dt 2 lw 2 front
set label 1 "issue 4 target: 5,000/s with p99 < 100 ms" at -0.5,6700 left front font ",11" tc rgb "#b22222"
do for [fmt in "png svg"] {
  if (fmt eq "png") { set terminal pngcairo size 900,520 font "DejaVu Sans,11" } else { set terminal svg size 900,520 font "DejaVu Sans,11" dynamic }
  set output "ingress-throughput.".fmt
  plot $data using 0:2:xtic(1) with boxes lc rgb "#1f77b4" title "answered/s", \
       ''    using 0:2:3:4 with yerrorbars lc rgb "#333333" pt 7 ps 0 notitle, \
       ''    using 0:(400):(sprintf("%d/s", $2)) with labels tc rgb "#ffffff" font ",11" notitle, \
       ''    using 0:($4+250):5 with labels font ",9" notitle
}
