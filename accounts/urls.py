from __future__ import annotations

from django.urls import path

from accounts.apis import LoginApi, LogoutApi, MeApi, RegisterApi, ResetIdentityApi, UserDirectoryApi

urlpatterns = [
    path("accounts/register", RegisterApi.as_view(), name="register"),
    path("accounts/login", LoginApi.as_view(), name="login"),
    path("accounts/reset-identity", ResetIdentityApi.as_view(), name="reset-identity"),
    path("accounts/logout", LogoutApi.as_view(), name="logout"),
    path("accounts/me", MeApi.as_view(), name="me"),
    path("users/<str:username>", UserDirectoryApi.as_view(), name="user-directory"),
]
