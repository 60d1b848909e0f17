"""Authorization is real: RBAC refuses an authenticated user it grants nothing."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import UNPRIVILEGED_USER
from localcluster.waiting import eventually

pytestmark = pytest.mark.integration

HTTP_FORBIDDEN = 403


def test_user_without_rbac_is_authenticated_but_forbidden(
    namespace: str, unprivileged_api_client: client.ApiClient, core_v1: client.CoreV1Api
) -> None:
    body: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    review: Any = client.AuthenticationV1Api(unprivileged_api_client).create_self_subject_review(body=body)
    assert review.status.user_info.username == UNPRIVILEGED_USER

    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(unprivileged_api_client).list_namespaced_pod(namespace)
    assert refused.value.status == HTTP_FORBIDDEN
    assert UNPRIVILEGED_USER in str(refused.value.body)

    # the same request as admin succeeds, so the 403 is about who asks, not what is asked
    assert core_v1.list_namespaced_pod(namespace).items == []


def test_rbac_grant_lifts_the_refusal(
    namespace: str, api_client: client.ApiClient, unprivileged_api_client: client.ApiClient
) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    role: Any = {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    }
    binding: Any = {
        "metadata": {"name": "pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": UNPRIVILEGED_USER}],
    }
    rbac.create_namespaced_role(namespace, role)
    rbac.create_namespaced_role_binding(namespace, binding)

    def allowed() -> bool:
        try:
            client.CoreV1Api(unprivileged_api_client).list_namespaced_pod(namespace)
        except ApiException as error:
            if error.status != HTTP_FORBIDDEN:
                raise
            return False
        return True

    # the authorizer reads RBAC objects from a watch cache, so the grant lands shortly after
    assert eventually(allowed, "the Role binding to take effect", 30.0)
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(unprivileged_api_client).list_namespaced_secret(namespace)
    assert refused.value.status == HTTP_FORBIDDEN
