"""The commands that write things: ``meshflow export``, ``certs``, ``token``."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from meshflow.errors import ConfigError
from meshflow.flow.config import load_flow, read_flow_header
from meshflow.gateway.auth import mint, parse_ttl, read_key_material
from meshflow.mesh.certs import FlowCA, write_private
from meshflow.observability.prometheus import prometheus_config, write_prometheus_config
from meshflow.voucher import Signer


def _export(args: argparse.Namespace) -> int:
    image = {
        "context": args.context,
        "dockerfile": args.dockerfile,
        "image": args.image,
        "extras": tuple(e.strip() for e in args.extras.split(",") if e.strip()),
    }
    if args.what == "docker-compose":
        # lazy: the exporters and the Envoy config they use cost ~25 ms; only export needs them
        from meshflow.deploy import export_compose

        if not args.outdir:
            raise ConfigError("export docker-compose needs OUTDIR: the folder to write into")
        os.makedirs(args.outdir, exist_ok=True)
        compose = os.path.join(args.outdir, "docker-compose.yml")
        written = export_compose(load_flow(args.config), compose, **image)
        print(f"wrote {len(written)} files; start with: docker compose -f {compose} up -d --build")
        return 0
    if args.what == "kubernetes":
        # lazy: the exporters and the Envoy config they use cost ~25 ms; only export needs them
        from meshflow.deploy import export_kubernetes, image_name

        if not args.outdir:
            raise ConfigError("export kubernetes needs OUTDIR: the folder to write into")
        flow = load_flow(args.config)
        written = export_kubernetes(
            flow,
            args.outdir,
            namespace=args.namespace,
            cert_manager=args.cert_manager,
            hpa=args.hpa,
            ingress_host=args.ingress_host,
            **image,
        )
        dockerfile = args.dockerfile or os.path.join(args.outdir, "Dockerfile")
        tag = args.image or image_name(flow.name)
        print(
            f"wrote {len(written)} files; build and push the image with: docker build -f "
            f"{dockerfile} -t {tag} {args.context or '.'} && docker push {tag}; then: "
            f"kubectl apply -f {written[-1]} && kubectl apply -k {args.outdir}"
        )
        return 0
    if args.outdir:
        raise ConfigError("export prometheus takes no OUTDIR (use --out FILE)")
    if not re.fullmatch(r"[0-9]+(ms|s|m|h)", args.scrape_interval):
        raise ConfigError(f"--scrape-interval {args.scrape_interval!r}: expected e.g. 5s or 1m")
    header = read_flow_header(args.config)  # no executor code needed
    config = prometheus_config(header.name, header.workspace, args.scrape_interval)
    try:
        write_prometheus_config(args.out, config)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out!r}: {exc.strerror}") from None
    print(f"wrote {args.out}: scrapes Flow {header.name!r} (targets from its workspace)")
    return 0


def _certs(args: argparse.Namespace) -> int:
    try:
        ca = FlowCA(args.out, args.flow, ca_dir=args.ca_dir)
        for workload in args.workload:
            print(f"{workload}: {ca.identity(workload).spiffe_id}")
        if args.signing_key:
            try:
                with open(args.signing_key, "rb") as fh:
                    signer = Signer.from_pem(fh.read())  # kept across runs of the job
            except FileNotFoundError:
                signer = Signer.generate()
                write_private(args.signing_key, signer.private_pem, 0o600)
            if args.signing_public_key:
                write_private(args.signing_public_key, signer.public_pem, 0o644)
            print(f"gateway signing key: {args.signing_key}")
        elif args.signing_public_key:
            raise ConfigError("--signing-public-key needs --signing-key")
    except OSError as exc:
        raise ConfigError(f"cannot write certificates in {args.out!r}: {exc.strerror}") from None
    return 0


def _token(args: argparse.Namespace) -> int:
    issuer, audience = args.iss, args.aud
    secret_file, secret_env = args.secret_file, args.secret_env
    if args.flow:
        auth = read_flow_header(args.flow).auth
        if auth is None:
            raise ConfigError(f"{args.flow} has no auth: section under with:")
        issuer = issuer or auth.issuer
        audience = audience or auth.audience
        if not (secret_file or secret_env or args.key_file):
            secret_file, secret_env = auth.secret_file, auth.secret_env
    key: Any
    if args.key_file:
        try:
            pem = read_key_material("key_file", args.key_file, "private key")
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{args.key_file} is not an unencrypted PEM private key: {exc}"
            ) from None
        alg = args.alg or ("ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256")
    elif secret_file or secret_env:
        source = "secret_file" if secret_file else "secret_env"
        key = read_key_material(source, secret_file or secret_env, "JWT secret").strip()
        alg = args.alg or "HS256"
    else:
        raise ConfigError("give --secret-file, --secret-env or --key-file (or --flow)")
    claims = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--claim {item!r}: expected NAME=VALUE")
        claims[name] = value
    scopes = tuple(s for item in args.scope for s in item.split())
    print(
        mint(
            key=key,
            subject=args.sub,
            issuer=issuer or "meshflow-dev",
            audience=audience or "meshflow",
            scopes=scopes,
            ttl=parse_ttl(args.ttl),
            algorithm=alg,
            kid=args.kid,
            claims=claims,
        )
    )
    return 0
