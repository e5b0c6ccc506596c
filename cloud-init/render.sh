#!/bin/bash
# Fills vespa-node.yaml.in into a #cloud-config for `openstack server create --user-data`.
#   VESPA_SOURCE_URL=https://gitlab.example.eu/vespa/epnlab-service.git \
#   VESPA_GITLAB_TOKEN_FILE=./deploy-token \
#   VESPA_AGENT_DEB_URL=https://downloads.example.eu/vespa-agent_0.1.0-1_amd64.deb \
#   bash cloud-init/render.sh > user-data
# Optional: VESPA_SOURCE_BRANCH (main), VESPA_GITLAB_REPORT (true), and instead of
# VESPA_AGENT_DEB_URL, VESPA_APT_SOURCE (a sources.list line of a repository that has vespa-agent).
# The token is read from a file so that it is in no process's arguments or environment; the
# output holds it, so keep the file you render into private.
set -euo pipefail
here="$(dirname "$0")"
die() { echo "render.sh: $*" >&2; exit 1; }

: "${VESPA_SOURCE_URL:?set VESPA_SOURCE_URL to the service repository (https://...)}"
: "${VESPA_GITLAB_TOKEN_FILE:?set VESPA_GITLAB_TOKEN_FILE to a file holding the deploy token}"
VESPA_SOURCE_BRANCH=${VESPA_SOURCE_BRANCH:-main}
VESPA_GITLAB_REPORT=${VESPA_GITLAB_REPORT:-true}
VESPA_AGENT_DEB_URL=${VESPA_AGENT_DEB_URL:-}
VESPA_APT_SOURCE=${VESPA_APT_SOURCE:-}

[[ $VESPA_SOURCE_URL =~ ^https?://[^[:space:]\"\\@]+$ ]] ||
  die "VESPA_SOURCE_URL must be an http(s) URL without credentials or quotes"
[[ $VESPA_SOURCE_BRANCH =~ ^[A-Za-z0-9._/-]+$ ]] || die "VESPA_SOURCE_BRANCH is not a branch name"
[[ $VESPA_GITLAB_REPORT == true || $VESPA_GITLAB_REPORT == false ]] ||
  die "VESPA_GITLAB_REPORT must be true or false"
if [[ -n $VESPA_AGENT_DEB_URL && -n $VESPA_APT_SOURCE ]] || [[ -z $VESPA_AGENT_DEB_URL && -z $VESPA_APT_SOURCE ]]; then
  die "set exactly one of VESPA_AGENT_DEB_URL (a .deb) and VESPA_APT_SOURCE (an apt repository)"
fi
[[ -z $VESPA_AGENT_DEB_URL || $VESPA_AGENT_DEB_URL =~ ^https?://[^[:space:]\"\\\$]+$ ]] ||
  die "VESPA_AGENT_DEB_URL must be an http(s) URL"
[[ -z $VESPA_APT_SOURCE || $VESPA_APT_SOURCE =~ ^deb\ [^\"\\\$]+$ ]] ||
  die "VESPA_APT_SOURCE must be a one-line 'deb ...' source without quotes or \$"
[[ -r $VESPA_GITLAB_TOKEN_FILE ]] || die "cannot read $VESPA_GITLAB_TOKEN_FILE"
VESPA_GITLAB_TOKEN=$(tr -d '\r\n' < "$VESPA_GITLAB_TOKEN_FILE")
# Tokens are letters, digits, - _ . : nothing that could end the YAML string it goes in.
[[ $VESPA_GITLAB_TOKEN =~ ^[A-Za-z0-9._-]{8,256}$ ]] ||
  die "the token in $VESPA_GITLAB_TOKEN_FILE is not a GitLab token (letters, digits, - _ .)"

export VESPA_SOURCE_URL VESPA_SOURCE_BRANCH VESPA_GITLAB_REPORT VESPA_AGENT_DEB_URL \
  VESPA_APT_SOURCE VESPA_GITLAB_TOKEN
# Only these variables: the shell lines of the template keep their own $names.
envsubst '$VESPA_SOURCE_URL $VESPA_SOURCE_BRANCH $VESPA_GITLAB_REPORT $VESPA_AGENT_DEB_URL $VESPA_APT_SOURCE $VESPA_GITLAB_TOKEN' \
  < "$here/vespa-node.yaml.in"
