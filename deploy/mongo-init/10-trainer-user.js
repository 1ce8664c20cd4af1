// Run once by the mongo image on first start (/docker-entrypoint-initdb.d, as root): creates the
// trainer's role from trainer-role.json, with each privilege on MONGODB_DB (and on each index's own
// collections, from INDEXES), and its user. The password comes from the container's environment,
// never from a command line.
const fs = require("fs");
const spec = JSON.parse(fs.readFileSync("/docker-entrypoint-initdb.d/trainer-role.json", "utf8"));
const dbName = process.env.MONGODB_DB || "edu_ranker_db";
// Each search index but the default writes its own collections, `<index>.<collection>` (docs/indexes.md).
const indexes = Object.keys(JSON.parse(process.env.INDEXES || "{}")).filter((name) => name !== "default");
const owned = spec.privileges.filter((p) => p.actions.includes("insert"));
const privileges = spec.privileges
  .concat(indexes.flatMap((index) => owned.map((p) => ({ ...p, resource: { collection: `${index}.${p.resource.collection}` } }))))
  .map((p) => ({ resource: { db: dbName, collection: p.resource.collection }, actions: p.actions }));
const admin = db.getSiblingDB("admin");
admin.createRole({ role: spec.role, privileges: privileges, roles: [] });
admin.createUser({
  user: process.env.MONGO_TRAINER_USER,
  pwd: process.env.MONGO_TRAINER_PASSWORD,
  roles: [{ role: spec.role, db: "admin" }],
});
