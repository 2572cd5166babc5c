// A type the schema derive refuses is one error, not one more at every use of its schema.
use statewright::StateSchema;

#[derive(StateSchema)]
union Bits {
    int: u32,
    float: f32,
}

#[derive(StateSchema)]
struct Holder {
    bits: Bits,
}

fn main() {
    let _ = (<Bits as StateSchema>::FINGERPRINT, <Holder as StateSchema>::SCHEMA);
}
