# Sourced by demo.sh and search_demo.sh: the synthetic dataset, its manifest and its cache.
# Needs $bin, $pipeline, $images and a `step` function; $steps is the step count shown.

step "1/$steps synthetic dataset (data/synth, $images images)"
# (A dataset from before boxes were the lesions' true extents is made again.)
if grep -qs "lesions' extents" data/synth/SYNTHETIC.txt && [ -f data/synth/Data_Entry_2017_v2020.csv ]; then
  echo "reusing data/synth"
else
  rm -rf data/synth
  "$bin" synth --out data/synth --images "$images" --size 112 --seed 0
fi

step "2/$steps manifest"
"$bin" manifest --pipeline "$pipeline"

step "3/$steps prepare (decode once into the cache)"
"$bin" prepare --pipeline "$pipeline"
