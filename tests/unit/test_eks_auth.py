import base64
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.stub import Stubber

from spot_rebalancer.eks_auth import (
    ClusterLookupError,
    describe_cluster,
    mint_token,
    token_sts_client,
)
from spot_rebalancer.kube import CachedToken


@pytest.fixture
def session():
    return boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                 region_name="eu-west-1")


def decode(token: str) -> str:
    assert token.startswith("k8s-aws-v1.")
    body = token.removeprefix("k8s-aws-v1.")
    assert "=" not in body, "EKS tokens carry base64url without padding"
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def test_token_is_a_presigned_regional_get_caller_identity_with_the_cluster_header_signed(session):
    url = urlsplit(decode(mint_token(token_sts_client(session, "eu-west-1"), "prod-cluster")))
    query = parse_qs(url.query)
    assert url.netloc == "sts.eu-west-1.amazonaws.com"
    assert query["Action"] == ["GetCallerIdentity"]
    assert query["X-Amz-SignedHeaders"] == ["host;x-k8s-aws-id"]
    assert query["X-Amz-Expires"] == ["60"]
    assert "x-k8s-aws-id" not in query, "the cluster name is a signed header, not a parameter"


@pytest.mark.parametrize(("region", "host"), [
    ("eu-west-1", "sts.eu-west-1.amazonaws.com"),
    ("us-east-1", "sts.us-east-1.amazonaws.com"),  # regional, never the global sts.amazonaws.com
    ("us-gov-west-1", "sts.us-gov-west-1.amazonaws.com"),
    ("cn-north-1", "sts.cn-north-1.amazonaws.com.cn"),
], ids=["aws", "aws us-east-1", "aws-us-gov", "aws-cn"])
def test_the_token_is_signed_for_the_partitions_regional_sts_host(region, host):
    """Hard-coded to amazonaws.com, the token was refused by every cluster outside the aws partition."""
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                    region_name=region)
    url = urlsplit(decode(mint_token(token_sts_client(session, region), "prod-cluster")))
    assert url.netloc == host
    assert parse_qs(url.query)["X-Amz-Credential"][0].split("/")[2] == region, "signed for its region"


def test_fips_endpoints_are_botocores_choice(session, monkeypatch):
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "true")
    fips = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                 region_name="us-gov-west-1")
    url = urlsplit(decode(mint_token(token_sts_client(fips, "us-gov-west-1"), "prod-cluster")))
    assert url.netloc == "sts.us-gov-west-1.amazonaws.com"  # FIPS by default in GovCloud
    commercial = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                                       region_name="us-east-2")
    url = urlsplit(decode(mint_token(token_sts_client(commercial, "us-east-2"), "prod-cluster")))
    assert url.netloc == "sts-fips.us-east-2.amazonaws.com"


def test_a_renewed_token_is_minted_at_the_next_call_whatever_its_age():
    minted = []
    def mint() -> str:
        minted.append(1)
        return f"token-{len(minted)}"

    token = CachedToken(mint, refresh_after=600, clock=lambda: 0.0)
    assert token() == token() == "token-1"
    token.renew()
    assert token() == "token-2"


def test_tokens_for_different_clusters_differ(session):
    sts = token_sts_client(session, "eu-west-1")
    assert mint_token(sts, "a") != mint_token(sts, "b")


def test_cached_token_is_minted_again_only_after_the_refresh_age():
    now = [0.0]
    minted = []

    def mint():
        minted.append(now[0])
        return f"token-{len(minted)}"

    token = CachedToken(mint, refresh_after=600, clock=lambda: now[0])
    assert token() == "token-1"
    now[0] = 599
    assert token() == "token-1"
    now[0] = 600
    assert token() == "token-2"
    # A 15-minute-old token (older than the refresh age) is never handed out.
    now[0] = 600 + 900
    assert token() == "token-3"
    assert minted == [0, 600, 1500]


def test_describe_cluster_decodes_the_ca(session):
    eks = session.client("eks")
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with Stubber(eks) as stub:
        stub.add_response("describe_cluster", {"cluster": {
            "endpoint": "https://ABC.gr7.eu-west-1.eks.amazonaws.com",
            "certificateAuthority": {"data": base64.b64encode(pem.encode()).decode()}}},
            {"name": "prod"})
        found = describe_cluster(eks, "prod")
    assert found.endpoint == "https://ABC.gr7.eu-west-1.eks.amazonaws.com"
    assert found.ca_pem == pem


def test_describe_cluster_names_the_missing_cluster(session):
    eks = session.client("eks")
    with Stubber(eks) as stub:
        stub.add_client_error("describe_cluster", "ResourceNotFoundException", "no such cluster")
        with pytest.raises(ClusterLookupError, match="cluster gone: not found"):
            describe_cluster(eks, "gone")
