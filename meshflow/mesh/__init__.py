"""The service mesh: Envoy sidecars, their configs, the Flow's CA, and the local mesh.

:mod:`~meshflow.mesh.local` is what a local Flow's runtime sees (direct or Envoy);
:mod:`~meshflow.mesh.config` builds sidecar configs (also for the exports);
:mod:`~meshflow.mesh.certs` issues workload certificates; :mod:`~meshflow.mesh.sidecar` runs
Envoy; :mod:`~meshflow.mesh.admin` reads its admin socket.
"""
