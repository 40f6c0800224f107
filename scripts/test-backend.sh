# Sourced by the test scripts (conformance.sh, s3-tests.sh): the storage their server runs on.
#
#   use_backend WHO PREFIX
#
# With STOWAGE_TEST_BACKEND=postgres-s3: creates a fresh PostgreSQL database named PREFIX_<pid>_<n>
# on $STOWAGE_TEST_POSTGRES_URL, sets $db to its name (the caller drops it when done), and exports
# the STOWAGE_* settings of that database and of a fresh key prefix in the S3-compatible store that
# scripts/postgres.sh and scripts/seaweedfs.sh started. With embedded (the default): nothing.
# WHO names the calling script in a refusal.
use_backend() {
  local who=$1 prefix=$2 name
  case "${STOWAGE_TEST_BACKEND:-embedded}" in
    embedded) ;;
    postgres-s3)
      name="${prefix}_$$_$RANDOM"
      psql "$STOWAGE_TEST_POSTGRES_URL" -q -c "CREATE DATABASE $name"
      db=$name
      export STOWAGE_METADATA="${STOWAGE_TEST_POSTGRES_URL%/*}/$db"
      export STOWAGE_BLOB_STORE=s3 STOWAGE_S3_ALLOW_HTTP=true STOWAGE_S3_PREFIX="$db"
      export STOWAGE_S3_ENDPOINT="$STOWAGE_TEST_S3_ENDPOINT" STOWAGE_S3_BUCKET="$STOWAGE_TEST_S3_BUCKET"
      export STOWAGE_S3_ACCESS_KEY_ID="$STOWAGE_TEST_S3_ACCESS_KEY" STOWAGE_S3_SECRET_ACCESS_KEY="$STOWAGE_TEST_S3_SECRET_KEY"
      ;;
    *)
      echo "$who: unknown STOWAGE_TEST_BACKEND ${STOWAGE_TEST_BACKEND}: use embedded or postgres-s3" >&2
      return 1
      ;;
  esac
}
