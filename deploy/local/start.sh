#!/usr/bin/env bash
# Builds Meridian and starts the three regions of deploy/local/meridian.yaml
# on this machine (embedded store, loopback only). Logs and pids go to run/
# under the repository; data to data/. Stop with deploy/local/stop.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target meridian
conf=deploy/local/meridian.yaml
./build/meridian check-config "$conf"
mkdir -p run
for region in east west south; do
  if [ -f "run/$region.pid" ] && kill -0 "$(cat "run/$region.pid")" 2>/dev/null; then
    echo "$region already running (pid $(cat "run/$region.pid"))"
    continue
  fi
  nohup ./build/meridian --config "$conf" --region "$region" >"run/$region.log" 2>&1 &
  echo $! >"run/$region.pid"
done
for port in 7001 7002 7003; do
  for _ in $(seq 50); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/_meridian/health" && break
    sleep 0.1
  done
  curl -fs -o /dev/null "http://127.0.0.1:$port/_meridian/health" || { echo "region on port $port did not start; see run/*.log"; exit 1; }
done
cat <<MSG
Three regions are up: east (hub) http://127.0.0.1:7001, west http://127.0.0.1:7002, south http://127.0.0.1:7003
Try:  curl -X PUT -d '{"tenantId":"t1","version":1}' http://127.0.0.1:7001/orders/o1
Logs: run/*.log    Stop: deploy/local/stop.sh
MSG
