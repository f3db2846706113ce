"""EKS authentication from an IAM role: the bearer token and the cluster's endpoint and CA.

The token is a presigned STS GetCallerIdentity URL carrying the header `x-k8s-aws-id: <cluster>`,
base64url-encoded behind `k8s-aws-v1.`; the cluster accepts it for 15 minutes after signing, so it is
cached per container and minted again after 10.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .kube import CachedToken, KubeClient

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
TOKEN_REFRESH_SECONDS = 600
# The presigned URL itself is only checked against this when the cluster first sees the token.
PRESIGN_EXPIRES_SECONDS = 60


class ClusterLookupError(RuntimeError):
    """The cluster's endpoint or CA could not be found."""


def mint_token(sts_client: Any, cluster_name: str) -> str:
    """A fresh EKS bearer token signed with `sts_client`'s credentials.

    `sts_client` must come from `token_sts_client`, which adds the cluster header to the signature.
    """
    url = sts_client.generate_presigned_url(
        "get_caller_identity", Params={CLUSTER_ID_HEADER: cluster_name},
        ExpiresIn=PRESIGN_EXPIRES_SECONDS, HttpMethod="GET")
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def token_sts_client(session: Any, region: str) -> Any:
    """A regional STS client that signs the cluster id header into presigned GetCallerIdentity URLs.

    Its endpoint is botocore's for the region (regional, botocore's default): the partition's
    domain (amazonaws.com.cn, the ISO and sovereign partitions), FIPS and dual-stack when
    configured, or a configured custom endpoint, all of which the cluster's verifier accepts. The
    cluster name travels as a pseudo-parameter: it is dropped from the query before validation and
    put into the signed headers instead.
    """
    sts = session.client("sts", region_name=region)

    def take_cluster(params: dict, context: dict, **_: Any) -> None:
        if CLUSTER_ID_HEADER in params:
            context[CLUSTER_ID_HEADER] = params.pop(CLUSTER_ID_HEADER)

    def sign_cluster(request: Any, **_: Any) -> None:
        cluster = request.context.get(CLUSTER_ID_HEADER)
        if cluster:
            request.headers[CLUSTER_ID_HEADER] = cluster

    sts.meta.events.register("provide-client-params.sts.GetCallerIdentity", take_cluster)
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", sign_cluster)
    return sts


@dataclass(frozen=True, slots=True)
class ClusterEndpoint:
    endpoint: str
    ca_pem: str


def describe_cluster(eks_client: Any, cluster_name: str) -> ClusterEndpoint:
    try:
        cluster = eks_client.describe_cluster(name=cluster_name)["cluster"]
        ca_pem = base64.b64decode(cluster["certificateAuthority"]["data"]).decode()
        return ClusterEndpoint(endpoint=cluster["endpoint"], ca_pem=ca_pem)
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ClusterLookupError(f"cluster {cluster_name}: no usable endpoint/CA: {exc}") from None
    except eks_client.exceptions.ResourceNotFoundException:
        raise ClusterLookupError(f"cluster {cluster_name}: not found") from None


@lru_cache(maxsize=16)
def client_for_cluster(cluster_name: str) -> KubeClient:
    """The cluster's client, cached per container: endpoint and CA from DescribeCluster, token from
    the role."""
    import boto3

    # The container's default session, which the handlers' own clients use: a session of its own
    # would load botocore's endpoint and model data again (30 ms of a cold start on CPython 3.13).
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    session = boto3.DEFAULT_SESSION
    region = session.region_name or os.environ.get("AWS_REGION", "us-east-1")
    target = describe_cluster(session.client("eks", region_name=region), cluster_name)
    sts = token_sts_client(session, region)
    token = CachedToken(lambda: mint_token(sts, cluster_name), TOKEN_REFRESH_SECONDS, time.monotonic)
    return KubeClient.with_token(target.endpoint, target.ca_pem, token, renew=token.renew)
