// The real npm `mongodb` driver through herald, for test_mongo.py.
// Usage: node mongo_node_client.js <port>   (NODE_PATH points at its node_modules)
// Prints one JSON object with what each operation returned.
'use strict';
const { MongoClient } = require('mongodb');

async function main() {
    const port = process.argv[2];
    const client = new MongoClient(`mongodb://127.0.0.1:${port}/?directConnection=true`, {
        tls: false, serverSelectionTimeoutMS: 5000, connectTimeoutMS: 5000, socketTimeoutMS: 10000,
        maxPoolSize: 1, appName: 'herald-node-test',
    });
    await client.connect();
    const c = client.db('nodedb').collection('nc');
    const out = {};
    out.insert = (await c.insertOne({ _id: 'a', x: 1 })).acknowledged;
    await c.insertMany(Array.from({ length: 30 }, (_, i) => ({ _id: i, x: i % 2 })));
    out.find = await c.find({ _id: 'a' }).toArray();
    const u = await c.updateOne({ _id: 'a' }, { $set: { y: 2 } });
    out.update = { matched: u.matchedCount, modified: u.modifiedCount };
    out.after = await c.find({ _id: 'a' }).toArray();
    out.agg = await c.aggregate([{ $match: { x: 1 } }]).toArray();
    out.batched = await c.find({ x: 0 }).batchSize(4).toArray();   // 15 documents: 3 getMores
    await client.close();
    process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => { process.stderr.write(String(e && e.stack || e) + '\n'); process.exit(1); });
