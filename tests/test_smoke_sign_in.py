from django.urls import reverse

from . import helpers


def test_owner_signs_in_with_password_and_code_and_sees_api_keys(client, owner, merchant, clock):
    response = client.post(reverse("dashboard:sign-in"), {"email": "OWNER@acme.test", "password": helpers.PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:sign-in-code")
    response = client.post(reverse("dashboard:sign-in-code"), {"code": helpers.current_code(owner)})
    assert response.status_code == 302
    response = client.get(response["Location"], follow=True)
    assert response.status_code == 200
    assert b"Generate API key" in response.content
