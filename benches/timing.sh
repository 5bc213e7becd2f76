# Shell functions the benchmark scripts share (sourced, not run).

# seconds_between START END: wall seconds between two `date +%s.%N` readings, to 0.01 s.
seconds_between() { python3 -c "print(round($2 - $1, 2))"; }

# median VALUE...: the median of the values, by their first number (of an even count, the
# lower of the middle two).
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
