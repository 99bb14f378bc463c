#!/usr/bin/env bash
# needle-convert as a user runs it: conversions, --info, round trips, and bad files.
source "$(dirname "$0")/common.bash"
C=$BIN/needle-convert

expect_exit 0 help -- "$C" --help
expect_stdout_has help "--export-pkl"

# tiny: every pickle variant converts; f32 round trip keeps every value (byte-equal files).
for v in tiny_np1_f16 tiny_np2_f16 tiny_np2_f32_p5 tiny_bf16; do
  expect_exit 0 "convert $v" -- "$C" "$DATA/$v.pkl" -o "$TMP/$v.needle" --type f32
done
# Every variant holds the same values (bf16 aside, which holds them rounded): equal data sections.
crc() { "$C" --info "$1" --json | grep -o '"data_crc32":[0-9]*'; }
for v in tiny_np2_f16 tiny_np2_f32_p5; do
  if [ "$(crc "$TMP/$v.needle")" = "$(crc "$TMP/tiny_np1_f16.needle")" ]; then pass=$((pass + 1)); else
    echo "FAIL $v: tensors differ from tiny_np1_f16"; fails=$((fails + 1)); fi
done
expect_exit 0 "export pkl" -- "$C" "$TMP/tiny_np1_f16.needle" --export-pkl "$TMP/rt.pkl"
expect_exit 0 "reconvert" -- "$C" "$TMP/rt.pkl" -o "$TMP/rt.needle" --type f32
# pkl -> needle (f32) -> pkl -> needle keeps every value: equal data sections (the metadata
# differs: provenance names the source), and a second export is byte-identical to the first.
if [ "$(crc "$TMP/rt.needle")" = "$(crc "$TMP/tiny_np1_f16.needle")" ]; then pass=$((pass + 1)); else
  echo "FAIL round trip: tensors changed"; fails=$((fails + 1)); fi
expect_exit 0 "export again" -- "$C" "$TMP/rt.needle" --export-pkl "$TMP/rt2.pkl"
if cmp -s "$TMP/rt.pkl" "$TMP/rt2.pkl"; then pass=$((pass + 1)); else
  echo "FAIL round trip: exported pickles differ"; fails=$((fails + 1)); fi

expect_exit 0 "info json" -- "$C" --info "$TMP/tiny_np1_f16.needle" --json
expect_stdout_has "info params" '"params":'
expect_stdout_has "info config" '"config":{"vocab_size":1000'
expect_exit 0 "int4" -- "$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/t4.needle"
expect_exit 0 "verify" -- "$C" --verify "$TMP/t4.needle"

# The full checkpoint (in CI via ../shared): 26,315,421 parameters; pkl -> needle(f32) -> pkl -> needle.
if [ -n "$SHARED" ] && [ -f "$SHARED/checkpoints/full_np1_f16.pkl" ]; then
  expect_exit 0 "full int4" -- "$C" "$SHARED/checkpoints/full_np1_f16.pkl" -o "$TMP/full.needle"
  expect_exit 0 "full info" -- "$C" --info "$TMP/full.needle" --json
  expect_stdout_has "full params" '"params":26315421'
  expect_exit 0 "full f32" -- "$C" "$SHARED/checkpoints/full_np1_f16.pkl" -o "$TMP/full32.needle" --type f32
  expect_exit 0 "full export" -- "$C" "$TMP/full32.needle" --export-pkl "$TMP/full.pkl"
  expect_exit 0 "full reconvert" -- "$C" "$TMP/full.pkl" -o "$TMP/full32b.needle" --type f32
  if [ "$(crc "$TMP/full32.needle")" = "$(crc "$TMP/full32b.needle")" ]; then pass=$((pass + 1)); else
    echo "FAIL full round trip: tensors changed"; fails=$((fails + 1)); fi
  rm -f "$TMP"/full*
else
  echo "note: full fixture absent; its checks were not run"
fi

# Bad input: one-line errors, exit 2, no output file left behind.
printf 'cos\nsystem\n(S"echo pwned"\ntR.' > "$TMP/evil.pkl"
expect_exit 2 "hostile pickle" -- "$C" "$TMP/evil.pkl" -o "$TMP/evil.needle"
expect_one_line_error "hostile pickle" "is not allowed"
[ ! -e "$TMP/evil.needle" ] && pass=$((pass + 1))
head -c 100000 "$DATA/tiny_np1_f16.pkl" > "$TMP/trunc.pkl"
expect_exit 2 "truncated pickle" -- "$C" "$TMP/trunc.pkl" -o "$TMP/x.needle"
expect_one_line_error "truncated pickle" "pickle"
head -c 5000 "$TMP/t4.needle" > "$TMP/trunc.needle"
expect_exit 2 "truncated needle" -- "$C" --info "$TMP/trunc.needle"
expect_one_line_error "truncated needle" "truncated"
cp "$TMP/t4.needle" "$TMP/flip.needle"
size=$(stat -c %s "$TMP/flip.needle")
printf '\xff' | dd of="$TMP/flip.needle" bs=1 seek=$((size - 1000)) conv=notrunc status=none
expect_exit 2 "bit flip" -- "$C" --verify "$TMP/flip.needle"
expect_one_line_error "bit flip" "checksum"
expect_exit 2 "directory" -- "$C" --info "$TMP"
expect_one_line_error "directory" "is a directory"
expect_exit 2 "missing" -- "$C" --info "$TMP/nope.needle"
expect_one_line_error "missing" "cannot open"
: > "$TMP/empty.pkl"
expect_exit 2 "empty" -- "$C" "$TMP/empty.pkl" -o "$TMP/e.needle"
expect_one_line_error "empty" "error"
expect_exit 2 "no args" -- "$C"
expect_exit 2 "bad type" -- "$C" "$DATA/tiny_np1_f16.pkl" -o "$TMP/x.needle" --type int3
# A full disk (ulimit -f): a clear error, exit 1, and the previous output file intact.
echo "previous" > "$TMP/keep.needle"
expect_exit 1 "file size limit" -- bash -c "ulimit -f 100; '$C' '$DATA/tiny_np1_f16.pkl' -o '$TMP/keep.needle' --type f32"
expect_one_line_error "file size limit" "File too large"
if [ "$(cat "$TMP/keep.needle")" = "previous" ]; then pass=$((pass + 1)); else echo "FAIL previous output damaged"; fails=$((fails + 1)); fi
ls "$TMP"/*.tmp.* >/dev/null 2>&1 && { echo "FAIL temp files left behind"; fails=$((fails + 1)); }
finish
