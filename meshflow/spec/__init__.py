"""The typed description of a Flow, one layer below everything that builds or runs it.

``FlowSpec`` (with its ``DeploymentSpec``s, their mesh policies, the gateway's limits and
auth) is what the Python builder and the YAML loader produce and what the local runtime, the
exporters and the CLI consume; ``ExecutorLaunch`` and ``GatewayLaunch`` are the command lines
of the processes, typed. Modules here import nothing of meshflow but ``errors`` and ``types``.
"""
